package policy

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// parseODDump reads extra-inputs.txt: "== input file PATH (N bytes):"
// headers followed by `od -c` dumps.
func parseODDump(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	header := regexp.MustCompile(`^== input file (\S+) \((\d+) bytes\):$`)
	files := map[string][]byte{}
	sizes := map[string]int{}
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := header.FindStringSubmatch(line); m != nil {
			cur = m[1]
			sizes[cur], _ = strconv.Atoi(m[2])
			files[cur] = []byte{}
			continue
		}
		if len(line) <= 7 {
			continue // final offset line
		}
		for rest := line[7:]; len(rest) > 0; {
			n := 4
			if len(rest) < n {
				n = len(rest)
			}
			field := strings.TrimLeft(rest[:n], " ")
			rest = rest[n:]
			var b byte
			switch {
			case field == "":
				b = ' '
			case field == `\n`:
				b = '\n'
			case field == `\t`:
				b = '\t'
			case field == `\r`:
				b = '\r'
			case field == `\0`:
				b = 0
			case len(field) == 1:
				b = field[0]
			case len(field) == 3:
				v, err := strconv.ParseUint(field, 8, 8)
				if err != nil {
					t.Fatalf("od field %q: %v", field, err)
				}
				b = byte(v)
			default:
				t.Fatalf("od field %q", field)
			}
			files[cur] = append(files[cur], b)
		}
	}
	for name, n := range sizes {
		// od pads the last line's fields: cut to the stated size.
		if len(files[name]) < n {
			t.Fatalf("%s: %d bytes decoded, header says %d", name, len(files[name]), n)
		}
		files[name] = files[name][:n]
	}
	return files
}

type extraStep struct {
	name     string
	command  string
	exit     int
	stdout   []string
	readback string
}

func parseExtraResults(t *testing.T, path string) []extraStep {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []extraStep
	var cur *extraStep
	inReadback := false
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "### "):
			steps = append(steps, extraStep{name: line[4:]})
			cur = &steps[len(steps)-1]
			inReadback = false
		case cur == nil:
		case strings.HasPrefix(line, "$ "):
			cur.command = line[2:]
		case strings.HasPrefix(line, "exit="):
			cur.exit, _ = strconv.Atoi(line[5:])
		case strings.HasPrefix(line, "stdout: "):
			cur.stdout = append(cur.stdout, line[8:])
		case strings.HasPrefix(line, "policy readback after"):
			inReadback = true
		case inReadback && strings.HasPrefix(line, "  | "):
			cur.readback += line[4:] + "\n"
		default:
			inReadback = false
		}
	}
	if len(steps) == 0 {
		t.Fatal("no steps")
	}
	return steps
}

// nsPolicy is the kernel's policy state across sessions: the built-in policy
// until the first successful load, which replaces it; later loads append.
type nsPolicy struct {
	rules         Policy
	defaultActive bool
}

func (n *nsPolicy) session(files map[string][]byte) *Session {
	return &Session{
		Options: ParseOptions{DefaultPolicyActive: n.defaultActive, HashAlgos: Kernel612HashAlgos},
		ReadFile: func(path string) ([]byte, error) {
			if b, ok := files[path]; ok {
				return b, nil
			}
			return nil, os.ErrNotExist
		},
	}
}

func (n *nsPolicy) commit(s *Session) error {
	rules, err := s.Commit()
	if err != nil {
		return err
	}
	if n.defaultActive {
		n.rules, n.defaultActive = rules, false
	} else {
		n.rules = append(n.rules, rules...)
	}
	return nil
}

// writeAll writes data the way cat does: write() the rest until the kernel
// has acknowledged all of it; the kernel's file position stays 0.
func writeAll(s *Session, data []byte) ([]int, error) {
	var counts []int
	for len(data) > 0 {
		n, err := s.Write(data, 0)
		if err != nil {
			return counts, err
		}
		counts = append(counts, n)
		if n >= len(data) {
			break
		}
		data = data[n:]
	}
	return counts, nil
}

// TestKernelPolicyFileSteps replays every step of policy-extra against
// Session and compares the writer's results and the read-back after each
// step with the real kernel's.
func TestKernelPolicyFileSteps(t *testing.T) {
	dir := filepath.Join(goldenDir, "policy-extra")
	files := parseODDump(t, filepath.Join(dir, "extra-inputs.txt"))
	steps := parseExtraResults(t, filepath.Join(dir, "extra-results.txt"))
	tcb, err := BuiltIn("tcb")
	if err != nil {
		t.Fatal(err)
	}
	ns := &nsPolicy{rules: tcb, defaultActive: true}
	if ns.rules.String() != steps[0].readback {
		t.Fatalf("tcb differs from the first read-back")
	}
	reFile := regexp.MustCompile(`(/tmp/x/\S+)`)
	reWrite := regexp.MustCompile(`write\((\d+)(?: bytes @\d+)?\)(?:: errno=(\d+)| = (\d+))`)
	checkedWrites := 0
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var input []byte
			if m := reFile.FindString(st.command); m != "" {
				var ok bool
				if input, ok = files[m]; !ok {
					t.Fatalf("no input %s", m)
				}
			}
			var failed bool // the writer saw an error
			var counts []int
			s := ns.session(files)
			switch {
			case strings.Contains(st.command, "gtool open") || strings.HasPrefix(st.command, "exec 6<>"):
				// Open modes (EACCES for O_RDWR, read-only): the file
				// system's part; no write session starts.
				s = nil
				failed = st.exit != 0
			case strings.HasPrefix(st.command, ": >"), strings.HasPrefix(st.command, "exec 5>"):
				// A session without any write (the second writer of 09a
				// gets EBUSY at open: the file system's part).
				failed = st.exit != 0 || len(st.stdout) > 0 && strings.Contains(st.stdout[0], "cat-exit=1")
			case strings.HasPrefix(st.command, "dd "):
				off := int64(0)
				if strings.Contains(st.command, "seek=1") {
					off = 1
				}
				// bs=1: the first write is one byte.
				_, err := s.Write(input[:1], off)
				failed = err != nil
				if failed && !errors.Is(err, ErrInvalid) {
					t.Errorf("dd: %v, want EINVAL", err)
				}
			case strings.Contains(st.command, "gtool writeat"):
				_, err := s.Write(input, 5)
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("pwrite at 5: %v, want EINVAL", err)
				}
				failed = true
			default: // cat, gtool polwrite, gtool busy
				var err error
				counts, err = writeAll(s, input)
				failed = err != nil
				if failed && !errors.Is(err, ErrInvalid) {
					t.Errorf("write: %v, want EINVAL", err)
				}
			}
			// The kernel's per-write results, where the tool printed them.
			var want []string
			for _, l := range st.stdout {
				if m := reWrite.FindStringSubmatch(l); m != nil {
					if m[2] != "" {
						want = append(want, "errno="+m[2])
					} else {
						want = append(want, m[3])
					}
				}
			}
			if len(want) > 0 {
				var got []string
				for _, c := range counts {
					got = append(got, strconv.Itoa(c))
				}
				if failed {
					got = append(got, "errno=22")
				}
				checkedWrites++
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("write results %v, kernel %v", got, want)
				}
			}
			if s != nil {
				err := ns.commit(s)
				t.Logf("commit: %v", err)
			}
			if strings.Contains(st.command, "gtool") || strings.HasPrefix(st.command, "exec") {
				// gtool exits 0 unless its own check failed; the shell
				// steps report through stdout/stderr (checked above).
			} else if (st.exit != 0) != failed {
				t.Errorf("writer failed = %v, kernel exit = %d", failed, st.exit)
			}
			if got := ns.rules.String(); got != st.readback {
				t.Errorf("read-back after step\n got %q\nwant %q", got, st.readback)
			}
		})
	}
	if checkedWrites < 4 { // 05b, 05c, 09b, 11a
		t.Errorf("only %d steps with per-write results checked", checkedWrites)
	}
	final, err := os.ReadFile(filepath.Join(dir, "policy-final-readback"))
	if err != nil {
		t.Fatal(err)
	}
	if got := ns.rules.String(); got != string(final) {
		t.Errorf("final read-back\n got %q\nwant %q", got, final)
	}
}
