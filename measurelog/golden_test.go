package measurelog

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// goldenDirs are the kernel-produced scenarios under testdata/kernel-6.12.
var goldenDirs = []struct {
	name       string
	template   string
	violations int
}{
	{"legacy", TemplateIMA, 0},
	{"ngsha256", TemplateIMANG, 2},
	{"ngv2", TemplateIMANGv2, 0},
}

func readGolden(t *testing.T, dir, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "kernel-6.12", dir, file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readPCRFile parses an evmctl --pcrs file ("PCR-NN: hex").
func readPCRFile(t *testing.T, b []byte) map[int][]byte {
	t.Helper()
	m := map[int][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok || !strings.HasPrefix(k, "PCR-") {
			t.Fatalf("bad pcr line %q", sc.Text())
		}
		i, err := strconv.Atoi(strings.TrimPrefix(k, "PCR-"))
		if err != nil {
			t.Fatal(err)
		}
		d, err := hex.DecodeString(v)
		if err != nil {
			t.Fatal(err)
		}
		m[i] = d
	}
	return m
}

// TestGoldenRoundTrip decodes every binary list the kernel printed, in
// every bank, and re-encodes it in every bank, binary and ascii: each
// rendering must equal the kernel's file byte for byte.
func TestGoldenRoundTrip(t *testing.T) {
	banks := []struct {
		algo   Algo
		suffix string
	}{{SHA1, ""}, {SHA1, "_sha1"}, {SHA256, "_sha256"}}
	for _, g := range goldenDirs {
		for _, in := range banks {
			t.Run(g.name+"/binary_runtime_measurements"+in.suffix, func(t *testing.T) {
				entries, err := DecodeBinary(readGolden(t, g.name, "binary_runtime_measurements"+in.suffix), in.algo)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				count, _ := strconv.Atoi(strings.TrimSpace(string(readGolden(t, g.name, "runtime_measurements_count"))))
				if len(entries) != count {
					t.Fatalf("decoded %d entries, kernel counted %d", len(entries), count)
				}
				violations := 0
				for _, e := range entries {
					if e.Template != g.template {
						t.Errorf("entry template %q, want %q", e.Template, g.template)
					}
					if e.Violation {
						violations++
					}
				}
				if violations != g.violations {
					t.Errorf("%d violations, want %d", violations, g.violations)
				}
				for _, out := range banks {
					var bin, asc []byte
					for _, e := range entries {
						bin = e.AppendBinary(bin, out.algo)
						asc = e.AppendASCII(asc, out.algo)
					}
					if want := readGolden(t, g.name, "binary_runtime_measurements"+out.suffix); !bytes.Equal(bin, want) {
						t.Errorf("binary%s: re-encoded %d bytes differ from the kernel's %d", out.suffix, len(bin), len(want))
					}
					if want := readGolden(t, g.name, "ascii_runtime_measurements"+out.suffix); !bytes.Equal(asc, want) {
						t.Errorf("ascii%s differs:\n got: %.300q\nwant: %.300q", out.suffix, asc, want)
					}
				}
			})
		}
	}
}

// TestGoldenReplay checks that replaying each kernel list gives the TPM's
// PCR-10 in both banks (violations extend with 0xff..), and every other
// PCR untouched.
func TestGoldenReplay(t *testing.T) {
	for _, g := range goldenDirs {
		t.Run(g.name, func(t *testing.T) {
			entries, err := DecodeBinary(readGolden(t, g.name, "binary_runtime_measurements"), SHA1)
			if err != nil {
				t.Fatal(err)
			}
			p := Replay(entries, SHA1, SHA256)
			if got := p.Touched(); len(got) != 1 || got[0] != 10 {
				t.Errorf("touched %v, want [10]", got)
			}
			for _, b := range []struct {
				algo Algo
				file string
			}{{SHA1, "pcrs-sha1.txt"}, {SHA256, "pcrs-sha256.txt"}} {
				tpm := readPCRFile(t, readGolden(t, g.name, b.file))
				if got := p.Value(b.algo, 10); !bytes.Equal(got, tpm[10]) {
					t.Errorf("%s PCR-10 = %x, TPM has %x", b.algo, got, tpm[10])
				}
			}
		})
	}
}

// TestGoldenRebuild builds each kernel entry again from what IMA observed
// (template, file digest, name as the task saw it) with NewEntry,
// NewViolation and NewBootAggregate, and compares with the kernel's
// records: it proves the field encoders, not only the round trip.
func TestGoldenRebuild(t *testing.T) {
	for _, g := range goldenDirs {
		t.Run(g.name, func(t *testing.T) {
			want, err := DecodeBinary(readGolden(t, g.name, "binary_runtime_measurements"), SHA1)
			if err != nil {
				t.Fatal(err)
			}
			// long-paths.txt: "label length path" of the paths the legacy
			// scenario executed.
			longPaths := map[string]string{}
			if g.name == "legacy" {
				for _, l := range strings.Split(strings.TrimSpace(string(readGolden(t, g.name, "long-paths.txt"))), "\n") {
					f := strings.Fields(l)
					if n, _ := strconv.Atoi(f[1]); n != len(f[2]) {
						t.Fatalf("long-paths.txt: %q is not %d bytes", f[2], n)
					}
					longPaths[filepath.Base(f[2])] = f[2]
				}
				if len(longPaths) != 3 {
					t.Fatalf("long-paths.txt: %d paths", len(longPaths))
				}
			}
			for i, k := range want {
				algoName, digest, err := k.FileDigest()
				if err != nil {
					t.Fatal(err)
				}
				algo, err := ParseAlgo(algoName)
				if err != nil {
					t.Fatal(err)
				}
				name := k.Name()
				// What the measured task saw: the golden paths with '_'
				// had spaces (dir with spaces, my script.sh, ...).
				if strings.Contains(name, "dir_with_spaces") {
					name = strings.ReplaceAll(name, "_", " ")
				}
				if full, ok := longPaths[name]; ok && g.name == "legacy" {
					name = full // the path the task used; the kernel kept only the file name
				}
				var e *Entry
				switch {
				case k.Violation:
					e, err = NewViolation(k.Template, k.PCR, name, SHA256)
				case i == 0:
					e, err = NewBootAggregate(k.Template, digest, algo)
				default:
					e, err = NewEntry(k.Template, k.PCR, Measurement{FileDigest: digest, FileAlgo: algo, Name: name})
				}
				if err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
				if got, want := e.AppendBinary(nil, SHA256), k.AppendBinary(nil, SHA256); !bytes.Equal(got, want) {
					t.Errorf("entry %d (%s): rebuilt\n%q\nkernel\n%q", i, name, e.AppendASCII(nil, SHA1), k.AppendASCII(nil, SHA1))
				}
			}
		})
	}
}
