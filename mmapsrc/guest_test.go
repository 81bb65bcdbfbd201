package mmapsrc_test

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/mmapsrc"
)

// The BPF LSM proof runs these tests in the QEMU guest of
// kernel-patches/test/run-bpf (a kernel with CONFIG_BPF_LSM, lsm=...,bpf):
// the test binary is built static (go test -c) and run as root with
// IMAFS_MMAPSRC_GUEST=1. They print "KTEST PASS|FAIL ..." lines the
// harness judges. Elsewhere they skip. The workload is this binary again
// (IMAFS_MMAPSRC_WORKLOAD=1) in new pid and mount namespaces: no compiler
// or C library in the guest.
const (
	guestEnv    = "IMAFS_MMAPSRC_GUEST"
	workloadEnv = "IMAFS_MMAPSRC_WORKLOAD"
)

func requireGuest(t *testing.T) {
	t.Helper()
	if os.Getenv(guestEnv) != "1" {
		t.Skipf("runs in the BPF LSM kernel's QEMU guest (kernel-patches/test/run-bpf; %s=1)", guestEnv)
	}
}

// ktest prints a verdict line for the harness and fails t on FAIL.
func ktest(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if ok {
		fmt.Printf("KTEST PASS %s\n", msg)
		return
	}
	fmt.Printf("KTEST FAIL %s\n", msg)
	t.Error(msg)
}

// guestWorkload serves commands on stdin, one answer line each: "ok" or
// "err ERRNO". mmapx PATH: mmap PROT_READ|PROT_EXEC, MAP_PRIVATE (then
// unmap); mmapr PATH: PROT_READ only; mprotect PATH: mmap PROT_READ, then
// mprotect adding PROT_EXEC; run PATH ARGS...: run a program, wait.
func guestWorkload() int {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			return 0
		}
		var err error
		switch f[0] {
		case "mmapx":
			err = mapFile(f[1], unix.PROT_READ|unix.PROT_EXEC, false, true)
		case "mmapr":
			err = mapFile(f[1], unix.PROT_READ, false, false)
		case "mprotect":
			err = mapFile(f[1], unix.PROT_READ, true, true)
		case "run":
			err = exec.Command(f[1], f[2:]...).Run()
		case "loop": // loop N PATH: N mmapx; answers "ok NS" (ns per mapping)
			var n int
			fmt.Sscan(f[1], &n)
			t0 := time.Now()
			for i := 0; i < n && err == nil && len(f) > 2; i++ {
				err = mapFile(f[2], unix.PROT_READ|unix.PROT_EXEC, false, false)
			}
			if err == nil && n > 0 {
				fmt.Printf("ok %d\n", time.Since(t0).Nanoseconds()/int64(n))
				continue
			}
		default:
			err = fmt.Errorf("unknown command %q", f[0])
		}
		var errno syscall.Errno
		switch {
		case err == nil:
			fmt.Println("ok")
		case errors.As(err, &errno):
			fmt.Printf("err %s\n", unix.ErrnoName(errno))
		default:
			fmt.Printf("err %v\n", err)
		}
	}
	return 0
}

// mapFile maps path's first page; with mprotect it then adds PROT_EXEC.
// With keep it keeps the mapping, as ld.so keeps a library's (the
// tracepoint mechanism opens it through /proc/PID/map_files after the
// fact), else it unmaps it at once.
func mapFile(path string, prot int, mprotect, keep bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := unix.Mmap(int(f.Fd()), 0, 4096, prot, unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	if mprotect {
		err = unix.Mprotect(b, unix.PROT_READ|unix.PROT_EXEC)
	}
	if keep {
		kept = append(kept, b)
		return err
	}
	unix.Munmap(b)
	return err
}

var kept [][]byte // the workload's mprotect'ed mappings

// guestMapper is the workload in new pid and mount namespaces.
type guestMapper struct {
	harness.Mapper
}

func startGuestMapper(t *testing.T) *guestMapper {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), workloadEnv+"=1")
	return &guestMapper{*harness.StartWorkload(t, cmd)}
}

// do runs a command and returns its answer ("ok", "err EACCES", ...).
func (m *guestMapper) do(t *testing.T, cmd string) string { return m.Ask(t, cmd) }

// guestFiles writes n distinct files into a new directory under /tmp.
func guestFiles(t *testing.T, dir string, names ...string) map[string]string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		p := filepath.Join(dir, n)
		data := make([]byte, 8192)
		copy(data, fmt.Sprintf("mmapsrc guest file %s %d\n", p, time.Now().UnixNano()))
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		out[n] = p
	}
	return out
}

// next receives the next event of the workload's mount namespace (others,
// e.g. of an earlier test, are skipped); nil after 20 quiet seconds (TCG
// is slow).
func next(t *testing.T, s *mmapsrc.Source, mntns uint64) *received {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				t.Fatal("events closed")
			}
			r := received{Event: ev}
			if ev.File != nil {
				h := sha256.New()
				io.Copy(h, ev.File)
				copy(r.Sum[:], h.Sum(nil))
				ev.File.Close()
				r.File = nil
			}
			if mntns == 0 || ev.MntNS == mntns || ev.Kind == mmapsrc.Lost {
				return &r
			}
		case <-timeout:
			return nil
		}
	}
}

// quiet maps a new, allowed fence file in m and returns the events that
// came before the fence's (the ring buffer is ordered): none, when what m
// and others did before was not to be reported.
func quiet(t *testing.T, s *mmapsrc.Source, m *guestMapper) []*received {
	t.Helper()
	fences++
	name := fmt.Sprintf("fence%d", fences)
	fence := guestFiles(t, "/tmp/fences", name)[name]
	s.Allow(m.MntNS, "sha256", sum256(t, fence))
	if got := m.do(t, "mmapx "+fence); got != "ok" {
		t.Fatalf("fence %s: %s", fence, got)
	}
	var out []*received
	for {
		r := next(t, s, 0)
		if r == nil {
			t.Fatalf("no event for the fence %s", fence)
		}
		if r.Path == fence {
			return out
		}
		out = append(out, r)
	}
}

var fences int

func (r *received) String() string {
	if r == nil {
		return "no event"
	}
	return fmt.Sprintf("%v pid %d %s %d:%d denied %v %s:%x err %v", r.Kind, r.Pid, r.Path, r.Dev, r.Ino, r.Denied, r.DigestAlgo, r.Digest, r.Err)
}

// digestIs: the event carries the kernel's sha256 of path.
func digestIs(r *received, path string) bool {
	data, err := os.ReadFile(path)
	if err != nil || r == nil {
		return false
	}
	want := sha256.Sum256(data)
	return r.DigestAlgo == "sha256" && string(r.Digest) == string(want[:])
}

// TestGuestLSM: the BPF LSM mechanism measures (kernel digest, path,
// once per file version) and denies (EACCES before the mapping exists) per
// mount namespace, for mmap and mprotect.
func TestGuestLSM(t *testing.T) {
	requireGuest(t)
	s, err := mmapsrc.Open(mmapsrc.Options{Mechanism: mmapsrc.MechanismLSM})
	ktest(t, err == nil, "lsm: Open with Mechanism lsm: %v", err)
	if err != nil {
		return
	}
	defer s.Close()
	ktest(t, s.Mechanism() == mmapsrc.MechanismLSM && s.Mechanism().CanDeny(), "lsm: mechanism %s runs", s.Mechanism())
	files := guestFiles(t, "/tmp/lsm", "a", "b", "c", "d", "e", "u")
	m, other, unwatched := startGuestMapper(t), startGuestMapper(t), startGuestMapper(t)
	watch(t, s, &m.Mapper)
	watch(t, s, &other.Mapper)
	mm := m.MntNS

	// (a) measured: the kernel's digest, the path, once.
	got := m.do(t, "mmapx "+files["a"])
	ev := next(t, s, mm)
	ktest(t, got == "ok" && ev != nil && ev.Kind == mmapsrc.Mmap && !ev.Denied && ev.Pid == m.Pid &&
		ev.Path == files["a"] && ev.PidNS == m.PidNS && digestIs(ev, files["a"]),
		"lsm (a): mmap(PROT_EXEC) reported with the kernel's sha256 and path: %s, %v", got, ev)
	m.do(t, "mmapx "+files["a"])
	evs := quiet(t, s, m)
	ktest(t, len(evs) == 0, "lsm (a): the same file mapped again is not reported again: %v", evs)
	m.do(t, "mmapr "+files["u"])
	unwatched.do(t, "mmapx "+files["u"])
	evs = quiet(t, s, m)
	ktest(t, len(evs) == 0, "lsm: a read-only mapping and an unwatched task are not reported: %v", evs)

	// (b) appraised, digest not allowed: EACCES, reported Denied.
	ktest(t, s.SetAppraise(mm, true) == nil, "lsm: SetAppraise on")
	got = m.do(t, "mmapx "+files["b"])
	ev = next(t, s, mm)
	ktest(t, got == "err EACCES" && ev != nil && ev.Denied && digestIs(ev, files["b"]),
		"lsm (b): appraised, not allowed: mmap gets EACCES, reported denied with its digest: %s, %v", got, ev)
	got = m.do(t, "mmapx "+files["a"])
	ev = next(t, s, mm)
	ktest(t, got == "err EACCES" && ev != nil && ev.Denied && digestIs(ev, files["a"]),
		"lsm (b): an already measured file not allowed is denied too (cached digest): %s, %v", got, ev)
	got = other.do(t, "mmapx "+files["b"])
	ev = next(t, s, other.MntNS)
	ktest(t, got == "ok" && ev != nil && !ev.Denied && digestIs(ev, files["b"]),
		"lsm (b): another mount namespace that does not appraise maps it: %s, %v", got, ev)

	// A digest is allowed per mount namespace (each container's keys).
	ktest(t, s.Allow(other.MntNS, "sha256", sum256(t, files["b"])) == nil, "lsm: Allow(sha256 of b) in the other mount namespace")
	got = m.do(t, "mmapx "+files["b"])
	ev = next(t, s, mm)
	ktest(t, got == "err EACCES" && ev != nil && ev.Denied,
		"lsm (b): a digest allowed in another mount namespace is still denied here: %s, %v", got, ev)

	// (c) allowed: the mapping succeeds and is reported once.
	ktest(t, s.Allow(mm, "sha256", sum256(t, files["b"])) == nil, "lsm: Allow(sha256 of b)")
	got = m.do(t, "mmapx "+files["b"])
	ev = next(t, s, mm)
	ktest(t, got == "ok" && ev != nil && !ev.Denied && digestIs(ev, files["b"]),
		"lsm (c): after Allow(digest) the mapping succeeds and is reported, not denied: %s, %v", got, ev)
	got = m.do(t, "mmapx "+files["b"])
	evs = quiet(t, s, m)
	ktest(t, got == "ok" && len(evs) == 0, "lsm (c): mapped again: succeeds, no event: %s, %v", got, evs)

	// (d) mprotect(+PROT_EXEC): with the digest cached from an exec
	// mapping, denied until allowed; without one (file_mprotect cannot
	// hash), denied while appraised, reported with the file to hash.
	got = m.do(t, "mmapx "+files["d"])
	next(t, s, mm)
	got2 := m.do(t, "mprotect "+files["d"])
	ev = next(t, s, mm)
	ktest(t, got == "err EACCES" && got2 == "err EACCES" && ev != nil && ev.Kind == mmapsrc.Mprotect && ev.Denied && digestIs(ev, files["d"]) && ev.Path == files["d"],
		"lsm (d): mprotect(+PROT_EXEC), not allowed: EACCES, reported denied with the cached digest: %s, %s, %v", got, got2, ev)
	s.Allow(mm, "sha256", sum256(t, files["d"]))
	got = m.do(t, "mprotect "+files["d"])
	ev = next(t, s, mm)
	ktest(t, got == "ok" && ev != nil && ev.Kind == mmapsrc.Mprotect && !ev.Denied && digestIs(ev, files["d"]) && ev.Path == files["d"],
		"lsm (d): after Allow, mprotect(+PROT_EXEC) succeeds and is reported: %s, %v", got, ev)
	got = m.do(t, "mprotect "+files["c"])
	ev = next(t, s, mm)
	ktest(t, got == "err EACCES" && ev != nil && ev.Kind == mmapsrc.Mprotect && ev.Denied && ev.Digest == nil && ev.Err == nil && ev.Sum == sha256.Sum256(read(t, files["c"])) && ev.Path == files["c"],
		"lsm (d): mprotect of a file never mapped executable (no kernel digest): EACCES, reported with the file: %s, %v", got, ev)
	ktest(t, s.SetAppraise(mm, false) == nil, "lsm: SetAppraise off")
	got = m.do(t, "mprotect "+files["e"])
	ev = next(t, s, mm)
	ktest(t, got == "ok" && ev != nil && !ev.Denied && ev.Sum == sha256.Sum256(read(t, files["e"])),
		"lsm (d): not appraised, mprotect(+PROT_EXEC) succeeds and is reported with the file: %s, %v", got, ev)
	st := s.Stats()
	ktest(t, st.Denied == 6 && st.Lost == 0, "lsm: Stats counts the 6 denials, nothing lost: %+v", st)
	cost(t, s, m, unwatched, files["a"])
}

// cost prints the time of a mapping of an already reported file, attached
// and watched, then detached (TCG: a hint, not the cost on hardware).
func cost(t *testing.T, s *mmapsrc.Source, m, unwatched *guestMapper, path string) {
	const n = 2000
	m.do(t, "mmapx "+path)
	unwatched.do(t, "mmapx "+path)
	loop := func(m *guestMapper) string {
		return strings.TrimPrefix(m.do(t, fmt.Sprintf("loop %d %s", n, path)), "ok ")
	}
	w1, u1, w2, u2 := loop(m), loop(unwatched), loop(m), loop(unwatched)
	ps, _ := s.ProgramStats()
	s.Close()
	d1, d2 := loop(m), loop(unwatched)
	fmt.Printf("KTEST INFO lsm cost (TCG, a hint): ns per open+mmap(PROT_EXEC)+munmap+close of a reported file, %d each: watched %s %s, unwatched %s %s, detached %s %s; programs %+v\n",
		n, w1, w2, u1, u2, d1, d2, ps)
}

func sum256(t *testing.T, path string) []byte {
	s := sha256.Sum256(read(t, path))
	return s[:]
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestGuestOracle: the kernel as the oracle. With the kernel's own IMA
// policy "measure func=MMAP_CHECK mask=MAY_EXEC", the same workload is
// seen by IMA and by both mechanisms at once; the (path, sha256) sets of
// the workload's files must be equal but for the differences
// docs/mmap-source.md explains: the tracepoints do not see the kernel's
// own mapping of an exec'd binary, and IMA measures no mprotect (with no
// appraise rule it does not look at file_mprotect).
func TestGuestOracle(t *testing.T) {
	requireGuest(t)
	const rule = "measure func=MMAP_CHECK mask=MAY_EXEC\n"
	err := os.WriteFile("/sys/kernel/security/ima/policy", []byte(rule), 0)
	ktest(t, err == nil, "oracle: kernel IMA policy %q loaded: %v", strings.TrimSpace(rule), err)
	srcs := map[string]*mmapsrc.Source{}
	for name, mech := range map[string]mmapsrc.Mechanism{"tracepoint": mmapsrc.MechanismTracepoint, "lsm": mmapsrc.MechanismLSM} {
		s, err := mmapsrc.Open(mmapsrc.Options{Mechanism: mech})
		ktest(t, err == nil, "oracle: the %s mechanism opens (both run at once): %v", name, err)
		if err == nil {
			defer s.Close()
			srcs[name] = s
		}
	}
	dir := "/tmp/oracle"
	files := guestFiles(t, dir, "lib1.so", "lib2.so", "lib3.so", "mprotected.so", "readonly.so", "fence.so")
	bb := filepath.Join(dir, "busybox")
	if err := os.WriteFile(bb, read(t, "/bin/busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := startGuestMapper(t)
	for _, s := range srcs {
		watch(t, s, &m.Mapper)
	}
	for _, c := range []string{
		"mmapx " + files["lib1.so"], "mmapx " + files["lib2.so"], "mmapx " + files["lib1.so"],
		"mprotect " + files["mprotected.so"], "mmapr " + files["readonly.so"], "mprotect " + files["lib3.so"],
		"mmapx " + files["lib3.so"], "run " + bb + " true", "mmapx " + files["fence.so"],
	} {
		if got := m.do(t, c); got != "ok" {
			t.Fatalf("workload %s: %s", c, got)
		}
	}
	sets := map[string]map[string]string{"kernel": kernelList(t, dir)}
	for name, s := range srcs {
		sets[name] = collect(t, s, files["fence.so"], m.MntNS, dir)
	}
	for name, set := range sets {
		fmt.Printf("KTEST INFO oracle: %s: %s\n", name, describe(set))
	}
	k := sets["kernel"]
	ktest(t, len(k) == 5 && k[bb] != "" && k[files["readonly.so"]] == "" && k[files["mprotected.so"]] == "",
		"oracle: the kernel measured lib1-3, fence and the exec'd busybox (not the read-only nor the mprotect'ed file): %s", describe(k))
	if srcs["lsm"] != nil {
		compare(t, "lsm", sets["lsm"], k, map[string]string{files["mprotected.so"]: "mprotect: IMA measures no mprotect"})
	}
	if srcs["tracepoint"] == nil {
		return
	}
	compare(t, "tracepoint", sets["tracepoint"], k, map[string]string{
		files["mprotected.so"]: "mprotect: IMA measures no mprotect",
		bb:                     "kernel: the exec'd binary's mapping by the kernel (execve), not a system call",
	})
}

// collect receives a source's events up to fence's and returns path →
// sha256 (the kernel's digest, else the hash of the opened file) of the
// files under dir (and every event that failed). (Outside dir: the
// workload binary itself, which the BPF LSM sees when the ELF loader maps
// it after Watch, a race with exec.Cmd.Start.)
func collect(t *testing.T, s *mmapsrc.Source, fence string, mntns uint64, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range until(t, s, fence, mntns) {
		if r.Kind == mmapsrc.Lost || r.MntNS != mntns || (r.Err == nil && !strings.HasPrefix(r.Path, dir+"/")) {
			continue
		}
		if r.Err != nil {
			r.Path = fmt.Sprintf("error %d:%d", r.Dev, r.Ino)
		}
		d := fmt.Sprintf("%x", r.Sum)
		if r.Digest != nil {
			d = fmt.Sprintf("%x", r.Digest)
		}
		if r.Err != nil {
			d = "error: " + r.Err.Error()
		}
		if old, ok := out[r.Path]; ok && old != d {
			t.Errorf("%s reported twice with different digests", r.Path)
		}
		out[r.Path] = d
	}
	return out
}

// kernelList reads the kernel's ima-ng entries of files under dir.
func kernelList(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(string(read(t, "/sys/kernel/security/ima/ascii_runtime_measurements")), "\n") {
		f := strings.SplitN(line, " ", 5)
		if len(f) == 5 && strings.HasPrefix(f[4], dir+"/") {
			out[f[4]] = strings.TrimPrefix(f[3], "sha256:")
		}
	}
	return out
}

// compare checks got against the kernel's set: equal but for the
// explained paths (which must differ: in got, not in the kernel's).
func compare(t *testing.T, name string, got, kernel, explained map[string]string) {
	t.Helper()
	for p, d := range kernel {
		if why, ok := explained[p]; ok {
			ktest(t, got[p] == "", "oracle: %s lacks %s, as explained (%s)", name, p, why)
			continue
		}
		ktest(t, got[p] == d, "oracle: %s has the kernel's %s sha256:%s (got %q)", name, p, d, got[p])
	}
	for p, d := range got {
		if _, ok := kernel[p]; ok {
			continue
		}
		why, ok := explained[p]
		ktest(t, ok, "oracle: %s reported %s sha256:%s, which the kernel did not measure (%s)", name, p, d, why)
	}
}

func describe(set map[string]string) string {
	var b strings.Builder
	for p, d := range set {
		if len(d) > 12 {
			d = d[:12]
		}
		fmt.Fprintf(&b, "%s=%s ", p, d)
	}
	return b.String()
}
