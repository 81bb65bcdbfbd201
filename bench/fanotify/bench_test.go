//go:build bench

package fanotifybench

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/policy"
)

const execs = 2000

// tinyELF returns a 129+ byte static x86-64 executable that exits 0; tag
// makes copies differ (it is data after the code, never executed).
func tinyELF(tag uint32) []byte {
	const base = 0x400000
	code := []byte{0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05} // mov eax,60; xor edi,edi; syscall
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	total := uint64(64 + 56 + len(code) + 4)
	binary.Write(&b, le, uint16(2))          // ET_EXEC
	binary.Write(&b, le, uint16(62))         // EM_X86_64
	binary.Write(&b, le, uint32(1))          // EV_CURRENT
	binary.Write(&b, le, uint64(base+64+56)) // entry
	binary.Write(&b, le, uint64(64))         // phoff
	binary.Write(&b, le, uint64(0))          // shoff
	binary.Write(&b, le, uint32(0))          // flags
	binary.Write(&b, le, uint16(64))         // ehsize
	binary.Write(&b, le, uint16(56))         // phentsize
	binary.Write(&b, le, uint16(1))          // phnum
	binary.Write(&b, le, [3]uint16{})        // shentsize, shnum, shstrndx
	binary.Write(&b, le, uint32(1))          // PT_LOAD
	binary.Write(&b, le, uint32(5))          // R|X
	binary.Write(&b, le, uint64(0))          // offset
	binary.Write(&b, le, uint64(base))       // vaddr
	binary.Write(&b, le, uint64(base))       // paddr
	binary.Write(&b, le, total)              // filesz
	binary.Write(&b, le, total)              // memsz
	binary.Write(&b, le, uint64(0x1000))     // align
	b.Write(code)
	binary.Write(&b, le, tag)
	return b.Bytes()
}

type ctr struct {
	pid  int
	root string
	cmd  *exec.Cmd
}

func startContainer(t *testing.T, dir string, size string) *ctr {
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox-static")
	}
	script := fmt.Sprintf(`set -e
mount -t tmpfs -o size=%s imafs-bench %s
mkdir %[2]s/bin %[2]s/tmp
for b in sh sleep head true; do cp %s %[2]s/bin/$b; done
exec chroot %[2]s /bin/sleep 3600`, size, root, bb)
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &ctr{root: root, cmd: cmd}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("container did not start")
		}
		if c.pid == 0 {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
			if f := strings.Fields(string(b)); len(f) > 0 {
				c.pid, _ = strconv.Atoi(f[0])
			}
		}
		if c.pid != 0 {
			r, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", c.pid))
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.pid))
			if r == root && strings.TrimSpace(string(comm)) == "sleep" {
				return c
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *ctr) path(p string) string { return fmt.Sprintf("/proc/%d/root%s", c.pid, p) }

// run times a shell script run inside the container.
func (c *ctr) run(t *testing.T, script string) time.Duration {
	start := time.Now()
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(c.pid), "-p", "-m", "-r", "--", "/bin/sh", "-c", script).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return d
}

func TestFanotifyBench(t *testing.T) {
	if os.Geteuid() != 0 || runtime.GOARCH != "amd64" {
		t.Skip("needs root on amd64")
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	reg, err := imans.NewRegistry(imans.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	eng, err := fanotify.New(fanotify.Options{Registry: reg, Log: log, Manual: true})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()

	c := startContainer(t, t.TempDir(), "1200m")
	const rounds = 3 // each figure is the best of 3 runs, interleaved
	for r := 0; r < rounds; r++ {
		for _, d := range []string{"a", "b"} {
			dir := c.path(fmt.Sprintf("/%s%d", d, r))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < execs; i++ {
				if err := os.WriteFile(fmt.Sprintf("%s/f%04d", dir, i), tinyELF(uint32(r*execs+i)), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	os.WriteFile(c.path("/bin/tiny"), tinyELF(0xffffffff), 0o755)
	ns, err := reg.Attach("bench", c.pid, nil) // no observer: the engine watches when told
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := policy.Parse("measure func=BPRM_CHECK")
	ns.LoadPolicy(rules)

	same := fmt.Sprintf("i=0; while [ $i -lt %d ]; do /bin/tiny; i=$((i+1)); done", execs)
	distinct := func(d string, r int) string { return fmt.Sprintf("for f in /%s%d/f*; do $f; done", d, r) }
	best := func(cur, d time.Duration) time.Duration {
		if cur == 0 || d < cur {
			return d
		}
		return cur
	}
	c.run(t, same) // warm up
	var baseSame, baseDistinct, engSame, engDistinct, engSameNoIgnore time.Duration
	var st fanotify.Stats
	for r := 0; r < rounds; r++ {
		baseSame = best(baseSame, c.run(t, same))
		baseDistinct = best(baseDistinct, c.run(t, distinct("a", r)))
		if err := eng.Watch(ns); err != nil {
			t.Fatal(err)
		}
		c.run(t, "/bin/tiny")
		engSame = best(engSame, c.run(t, same))
		n0 := ns.List.Len()
		s0 := eng.Stats()
		engDistinct = best(engDistinct, c.run(t, distinct("b", r)))
		s1 := eng.Stats()
		if n := s1.Allowed + s1.Denied - s0.Allowed - s0.Denied; n > 0 {
			fmt.Printf("  round %d: first measurements answered in %v on average (read to answer)\n", r, (s1.Latency-s0.Latency)/time.Duration(n))
		}
		if got := ns.List.Len() - n0; got < execs {
			t.Fatalf("first-time loop measured %d files, want %d", got, execs)
		}
		st = eng.Stats()
		eng.Unwatch("bench")
	}

	// Already measured, but no ignore marks (a uid condition makes the
	// decision caller-dependent): every exec is a round trip answered from
	// the per-container cache.
	rules2, _ := policy.Parse("measure func=BPRM_CHECK uid=0")
	ns.LoadPolicy(rules2)
	eng.Watch(ns)
	c.run(t, "/bin/tiny")
	for r := 0; r < rounds; r++ {
		s0 := eng.Stats()
		engSameNoIgnore = best(engSameNoIgnore, c.run(t, same))
		s1 := eng.Stats()
		if n := s1.Allowed + s1.Denied - s0.Allowed - s0.Denied; n > 0 {
			fmt.Printf("  round %d: cached answers in %v on average (read to answer)\n", r, (s1.Latency-s0.Latency)/time.Duration(n))
		}
	}
	eng.Unwatch("bench")

	// 1 GiB: first measurement (a read open under FILE_CHECK) vs openssl.
	big := c.path("/tmp/big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, 1<<30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var opensslTime time.Duration
	for r := 0; r < rounds; r++ {
		start := time.Now()
		out, err := exec.Command("openssl", "dgst", "-sha256", big).CombinedOutput()
		opensslTime = best(opensslTime, time.Since(start))
		if err != nil {
			t.Fatalf("openssl: %v %s", err, out)
		}
	}
	rules3, _ := policy.Parse("measure func=FILE_CHECK")
	ns.LoadPolicy(rules3)
	baseHead := c.run(t, "head -c1 /bin/true >/tmp/x")
	var firstBig time.Duration
	for r := 0; r < rounds; r++ {
		eng.Watch(ns) // a fresh group and cache: the first measurement again
		firstBig = best(firstBig, c.run(t, "head -c1 /tmp/big > /tmp/x"))
		eng.Unwatch("bench")
	}
	eng.Watch(ns)
	c.run(t, "head -c1 /tmp/big > /tmp/x")
	againBig := c.run(t, "head -c1 /tmp/big > /tmp/x")
	eng.Unwatch("bench")

	per := func(d time.Duration) string { return fmt.Sprintf("%7.1f µs/exec", float64(d.Microseconds())/execs) }
	fmt.Printf("fanotify engine benchmark (%d execs of a %d-byte static binary, %d CPUs, best of %d)\n", execs, len(tinyELF(0)), runtime.NumCPU(), rounds)
	fmt.Printf("  same binary, imafs not watching:          %8v %s\n", baseSame.Round(time.Millisecond), per(baseSame))
	fmt.Printf("  same binary, measured (ignore marks):     %8v %s  ratio %.2f\n", engSame.Round(time.Millisecond), per(engSame), float64(engSame)/float64(baseSame))
	fmt.Printf("  same binary, measured (cache, no marks):  %8v %s  ratio %.2f\n", engSameNoIgnore.Round(time.Millisecond), per(engSameNoIgnore), float64(engSameNoIgnore)/float64(baseSame))
	fmt.Printf("  distinct binaries, imafs not watching:    %8v %s\n", baseDistinct.Round(time.Millisecond), per(baseDistinct))
	fmt.Printf("  distinct binaries, first measurement:     %8v %s  ratio %.2f\n", engDistinct.Round(time.Millisecond), per(engDistinct), float64(engDistinct)/float64(baseDistinct))
	fmt.Printf("  1 GiB file: openssl dgst -sha256 %v; first measured open %v (ratio %.2f; a small open costs %v); measured again %v\n",
		opensslTime.Round(time.Millisecond), firstBig.Round(time.Millisecond), float64(firstBig)/float64(opensslTime), baseHead.Round(time.Millisecond), againBig.Round(time.Millisecond))
	fmt.Printf("  engine stats after the exec loops: %+v\n", st)
}
