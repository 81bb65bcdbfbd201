package integration

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// The mmap source through the real daemon (`imafs serve` with its default
// sources: the fanotify engine and the mmap source) and real runc
// containers with a glibc userland copied from the host (Debian's python3,
// ls, env, every library ldd lists, ld.so, the part of python's standard
// library that `import ssl` and `import ctypes` need) on a tmpfs rootfs.

// pyStdlib is what python3 -c 'import ssl' / 'import ctypes' reads of
// /usr/lib/python3.11 (the top-level modules are all copied).
var pyStdlib = []string{"collections", "ctypes", "encodings", "importlib", "re", "json", "lib-dynload"}

// glibcRootfs is a tmpfs busybox rootfs (tmpfsRootfs) plus the host's
// python3, ls and env with their libraries at the paths the host has them
// (/lib, /lib64 symlinks to usr/ as on Debian), and libimafs-preload.so
// built with gcc.
func glibcRootfs(t *testing.T) string {
	t.Helper()
	root := tmpfsRootfs(t)
	for _, l := range []string{"lib", "lib64"} {
		if err := os.Symlink("usr/"+l, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	bins := []string{"/usr/bin/python3", "/usr/bin/ls", "/usr/bin/env"}
	for _, b := range bins {
		copyHostPath(t, root, b)
	}
	py := "/usr/lib/python3.11"
	tops, _ := filepath.Glob(py + "/*.py")
	for _, f := range tops {
		copyHostPath(t, root, f)
	}
	for _, d := range pyStdlib {
		filepath.Walk(filepath.Join(py, d), func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && !strings.Contains(p, "__pycache__") {
				copyHostPath(t, root, p)
			}
			return nil
		})
	}
	dynload, _ := filepath.Glob(py + "/lib-dynload/*.so")
	for _, lib := range lddLibs(t, append(bins, dynload...)...) {
		copyHostPath(t, root, lib)
	}
	src := filepath.Join(t.TempDir(), "preload.c")
	os.WriteFile(src, []byte("int imafs_preload_marker(void) { return 42; }\n"), 0o644)
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", filepath.Join(root, "usr/lib/libimafs-preload.so"), src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return root
}

var lddLine = regexp.MustCompile(`(?:=> )?(/\S+) \(0x`)

// lddLibs returns the libraries ldd lists for files (ld.so included).
func lddLibs(t *testing.T, files ...string) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		b, err := exec.Command("ldd", f).Output()
		if err != nil {
			t.Fatalf("ldd %s: %v", f, err)
		}
		for _, m := range lddLine.FindAllStringSubmatch(string(b), -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				out = append(out, m[1])
			}
		}
	}
	return out
}

// realPath is where a host path's file is (the path the kernel and imafs
// record for it: symbolic links resolved).
func realPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// copyHostPath copies host path p into root at the same path, recreating
// the symbolic links on the way (their directories resolved on the host).
func copyHostPath(t *testing.T, root, p string) {
	t.Helper()
	for range 40 {
		dir, err := filepath.EvalSymlinks(filepath.Dir(p))
		if err != nil {
			t.Fatal(err)
		}
		p = filepath.Join(dir, filepath.Base(p))
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			copyFile(t, p, dst, fi.Mode().Perm())
			return
		}
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, dst); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(dir, target)
		}
		p = target
	}
	t.Fatalf("%s: too many symbolic links", p)
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	if _, err := os.Lstat(dst); err == nil {
		return
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitMeasured polls c's list until every name in want is measured and
// returns the list and true; false when a new <mmap-unmeasured> violation
// (more than before) came instead (the tracepoint mechanism's limit: the
// task exited before the daemon opened its mapping; the file is measured at
// its next mapping), or after 30 s.
func waitMeasured(t *testing.T, c *harness.RuncContainer, want []string, before int) (string, bool) {
	t.Helper()
	var list string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		list = runIn(t, c, "cat", ima+"/ascii_runtime_measurements")
		missing := false
		for _, n := range want {
			if len(measured(list, n)) == 0 {
				missing = true
				break
			}
		}
		if !missing {
			return list, true
		}
		if len(measured(list, "<mmap-unmeasured>")) > before {
			return list, false
		}
	}
	return list, false
}

// runMeasured runs work in c until every name in want is measured (at most
// three runs: a run whose short-lived task exited before the daemon opened
// its mapping leaves a <mmap-unmeasured> violation, and the next run's
// mapping is measured).
func runMeasured(t *testing.T, c *harness.RuncContainer, want []string, work func()) string {
	t.Helper()
	var list string
	for run := 1; run <= 3; run++ {
		before := len(measured(runIn(t, c, "cat", ima+"/ascii_runtime_measurements"), "<mmap-unmeasured>"))
		work()
		var ok bool
		if list, ok = waitMeasured(t, c, want, before); ok {
			return list
		}
		t.Logf("%s: run %d: not every library measured (%d <mmap-unmeasured> violations before)", c.ID, run, before)
	}
	return list
}

// TestMmapLibraries: with `measure func=MMAP_CHECK mask=MAY_EXEC`, a
// container's list holds every library its programs map executable
// (ld.so's libraries of ls, env and python3, an LD_PRELOADed library, and
// the _ssl module python dlopens with libssl and libcrypto), each once with
// the sha256 of the file and the path the container sees; another
// container's mappings never appear in it. Loading `appraise
// func=MMAP_CHECK` records <mmap-appraise-unenforced> and logs why (this
// VM: the tracepoint mechanism cannot deny). (A run
// whose short-lived task exits before the daemon opens a mapping is run
// again: see runMeasured.)
func TestMmapLibraries(t *testing.T) {
	needFanotifyDaemon(t)
	harness.RequireTools(t, "gcc", "ldd", "/usr/bin/python3")
	d := startDaemon(t, "--fanotify=auto") // serve's defaults
	var rows []struct {
		ID      string            `json:"id"`
		Sources map[string]string `json:"sources"`
	}
	out, err := d.imafs("ps", "--json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &rows)
	}
	if err != nil || len(rows) == 0 {
		t.Fatalf("ps --json: %v: %s", err, out)
	}
	if m := rows[0].Sources["mmap"]; m != "tracepoint" && m != "bpf-lsm" {
		t.Skipf("mmap source not running here (ps --json sources %v)", rows[0].Sources)
	}
	if rows[0].Sources["fanotify"] != "fanotify" {
		t.Errorf("ps --json sources %v: want the fanotify engine by default", rows[0].Sources)
	}
	r1, r2 := glibcRootfs(t), glibcRootfs(t)
	c1 := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Rootfs: r1, Capabilities: []string{"CAP_SYS_ADMIN"}})
	c2 := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Rootfs: r2, Capabilities: []string{"CAP_SYS_ADMIN"}})
	for _, c := range []*harness.RuncContainer{c1, c2} {
		runIn(t, c, "sh", "-c", "echo 'measure func=MMAP_CHECK mask=MAY_EXEC' > "+ima+"/policy")
	}

	dyn := "/usr/lib/python3.11/lib-dynload/"
	var want []string
	for _, l := range lddLibs(t, "/usr/bin/python3", "/usr/bin/ls", "/usr/bin/env", dyn+"_ssl.cpython-311-x86_64-linux-gnu.so") {
		if !strings.Contains(l, "/ld-linux") { // mapped by execve itself: BPRM_CHECK's, see docs/mmap-source.md
			want = append(want, realPath(t, l))
		}
	}
	want = append(want, "/usr/lib/libimafs-preload.so", dyn+"_ssl.cpython-311-x86_64-linux-gnu.so")
	list1 := runMeasured(t, c1, want, func() {
		runIn(t, c1, "/usr/bin/env", "LD_PRELOAD=/usr/lib/libimafs-preload.so", "/usr/bin/ls", "/")
		runIn(t, c1, "/usr/bin/python3", "-c", "import ssl")
	})
	for _, name := range want {
		got := measured(list1, name)
		sum := "sha256:" + sha256File(t, filepath.Join(r1, name))
		if len(got) != 1 || strings.Fields(got[0])[3] != sum {
			t.Errorf("c1: entries for %s: %q, want one with %s", name, got, sum)
		}
	}
	ctypes := dyn + "_ctypes.cpython-311-x86_64-linux-gnu.so"
	list2 := runMeasured(t, c2, []string{ctypes}, func() { runIn(t, c2, "/usr/bin/python3", "-c", "import ctypes") })
	if len(measured(list2, ctypes)) != 1 {
		t.Errorf("c2: %s not measured once:\n%s", ctypes, list2)
	}
	for _, n := range []string{"/usr/lib/libimafs-preload.so", dyn + "_ssl.cpython-311-x86_64-linux-gnu.so"} {
		if len(measured(list2, n)) != 0 {
			t.Errorf("c2's list holds c1's mapping %s", n)
		}
	}
	if len(measured(runIn(t, c1, "cat", ima+"/ascii_runtime_measurements"), ctypes)) != 0 {
		t.Errorf("c1's list holds c2's mapping %s", ctypes)
	}
	if t.Failed() {
		t.Logf("c1 list:\n%s\nc2 list:\n%s", list1, list2)
	}

	runIn(t, c1, "sh", "-c", "echo 'appraise func=MMAP_CHECK appraise_type=imasig' > "+ima+"/policy")
	list1, _ = waitMeasured(t, c1, []string{"<mmap-appraise-unenforced>"}, 1<<30)
	if len(measured(list1, "<mmap-appraise-unenforced>")) != 1 {
		t.Errorf("c1: no <mmap-appraise-unenforced> violation after loading an appraise rule:\n%s", list1)
	}
	log, _ := os.ReadFile(d.log)
	said := false
	for _, l := range lines(string(log)) {
		said = said || strings.Contains(l, "which cannot be enforced here") && strings.Contains(l, "id="+c1.ID)
	}
	if !said {
		t.Errorf("daemon log does not say the appraise rule of %s cannot be enforced", c1.ID)
	}
}
