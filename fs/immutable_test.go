package fs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
)

// treeOp is one attempt to change the tree, run by TestTreeOpHelper in the
// caller's credentials and namespaces; root and nonRoot are the errnos
// securityfs answers uid 0 and anyone else.
type treeOp struct {
	name          string
	do            func(mnt string) error
	root, nonRoot syscall.Errno
}

func treeOps() []treeOp {
	ima := func(mnt, name string) string { return filepath.Join(mnt, "integrity/ima", name) }
	// A non-root link(2) of a file it can neither read nor write is refused
	// by the VFS itself when protected_hardlinks is on (may_linkat).
	linkNonRoot := syscall.EACCES
	if b, _ := os.ReadFile("/proc/sys/fs/protected_hardlinks"); strings.TrimSpace(string(b)) == "1" {
		linkNonRoot = syscall.EPERM
	}
	return []treeOp{
		{"unlink policy", func(m string) error { return unix.Unlink(ima(m, "policy")) }, syscall.EPERM, syscall.EACCES},
		{"unlink list", func(m string) error { return unix.Unlink(ima(m, "ascii_runtime_measurements_sha1")) }, syscall.EPERM, syscall.EACCES},
		{"unlink symlink ima", func(m string) error { return unix.Unlink(filepath.Join(m, "ima")) }, syscall.EPERM, syscall.EACCES},
		{"rmdir integrity", func(m string) error { return unix.Rmdir(filepath.Join(m, "integrity")) }, syscall.EPERM, syscall.EACCES},
		{"rmdir integrity/ima", func(m string) error { return unix.Rmdir(filepath.Join(m, "integrity/ima")) }, syscall.EPERM, syscall.EACCES},
		{"rename policy", func(m string) error { return unix.Rename(ima(m, "policy"), ima(m, "policy.old")) }, syscall.EPERM, syscall.EACCES},
		{"rename over violations", func(m string) error { return unix.Rename(ima(m, "policy"), ima(m, "violations")) }, syscall.EPERM, syscall.EACCES},
		{"rename dir", func(m string) error { return unix.Rename(filepath.Join(m, "integrity"), filepath.Join(m, "x")) }, syscall.EPERM, syscall.EACCES},
		{"link policy", func(m string) error { return unix.Link(ima(m, "policy"), ima(m, "hard")) }, syscall.EPERM, linkNonRoot},
		{"symlink", func(m string) error { return unix.Symlink("/etc/passwd", ima(m, "ascii_evil")) }, syscall.EPERM, syscall.EACCES},
		{"mkdir", func(m string) error { return unix.Mkdir(ima(m, "d"), 0o755) }, syscall.EPERM, syscall.EACCES},
		{"mknod fifo", func(m string) error { return unix.Mknod(ima(m, "fifo"), unix.S_IFIFO|0o600, 0) }, syscall.EPERM, syscall.EACCES},
		{"mknod regular", func(m string) error { return unix.Mknod(ima(m, "reg"), unix.S_IFREG|0o600, 0) }, syscall.EACCES, syscall.EACCES},
		{"create", func(m string) error {
			fd, err := unix.Open(ima(m, "new"), unix.O_CREAT|unix.O_WRONLY|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}, syscall.EACCES, syscall.EACCES},
		{"setxattr list", func(m string) error { return unix.Setxattr(ima(m, "violations"), "user.x", []byte("1"), 0) }, syscall.EOPNOTSUPP, syscall.EACCES},
		{"removexattr policy", func(m string) error { return unix.Removexattr(ima(m, "policy"), "user.x") }, syscall.EOPNOTSUPP, syscall.EACCES},
		{"setxattr dir", func(m string) error { return unix.Setxattr(filepath.Join(m, "integrity"), "user.x", []byte("1"), 0) }, syscall.EOPNOTSUPP, syscall.EACCES},
		{"truncate list", func(m string) error { return unix.Truncate(ima(m, "ascii_runtime_measurements_sha256"), 0) }, syscall.EPERM, syscall.EACCES},
		{"truncate counter", func(m string) error { return unix.Truncate(ima(m, "runtime_measurements_count"), 1) }, syscall.EPERM, syscall.EACCES},
		{"truncate policy to 5", func(m string) error { return unix.Truncate(ima(m, "policy"), 5) }, syscall.EPERM, syscall.EACCES},
		{"chmod list", func(m string) error { return unix.Chmod(ima(m, "binary_runtime_measurements_sha1"), 0o666) }, syscall.EPERM, syscall.EPERM},
		{"chown dir", func(m string) error { return unix.Chown(filepath.Join(m, "integrity"), 1000, 1000) }, syscall.EPERM, syscall.EPERM},
	}
}

// TestTreeOpHelper is not a test: TestTreeImmutable re-runs the test binary
// as another caller with IMAFS_TREE_OP set, to try one change of the tree.
func TestTreeOpHelper(t *testing.T) {
	name, mnt := os.Getenv("IMAFS_TREE_OP"), os.Getenv("IMAFS_TREE_MNT")
	if name == "" {
		t.Skip("helper for TestTreeImmutable")
	}
	for _, op := range treeOps() {
		if op.name == name {
			var errno syscall.Errno
			if err := op.do(mnt); err != nil && !errors.As(err, &errno) {
				t.Fatalf("%s: %v", name, err)
			}
			fmt.Printf("RESULT %d\n", int(errno))
			return
		}
	}
	t.Fatalf("no op %q", name)
}

// helperBinary copies the test binary where every uid can run it.
func helperBinary(t *testing.T) string {
	t.Helper()
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(harness.TempDir(t), "fs.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// tryOp runs op as uid (0: root with every capability) inside the pid
// namespace of pid (0: the host) and returns its errno.
func tryOp(t *testing.T, bin string, pid, uid int, mnt, op string) syscall.Errno {
	t.Helper()
	argv := []string{bin, "-test.run=^TestTreeOpHelper$", "-test.count=1"}
	if uid != 0 {
		argv = append([]string{"setpriv", "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid), "--clear-groups"}, argv...)
	}
	if pid != 0 {
		argv = append([]string{"nsenter", "--target", strconv.Itoa(pid), "--pid", "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "IMAFS_TREE_OP="+op, "IMAFS_TREE_MNT="+mnt)
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "RESULT "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return syscall.Errno(n)
		}
	}
	t.Fatalf("%s as uid %d: %v: %s", op, uid, err, out)
	return 0
}

// TestTreeImmutable: every change of the tree (unlink, rmdir, rename, link,
// symlink, mkdir, mknod, create, xattrs, truncate, chmod, chown) is refused
// with securityfs's errno for root and non-root, on the host view and in a
// container, and the tree is whole afterwards.
func TestTreeImmutable(t *testing.T) {
	fx := mount(t, imans.Options{})
	reg, dir := fx.reg, fx.dir
	pid := harness.StartSleeper(t).Pid
	if _, err := reg.Attach("c", pid, nil); err != nil {
		t.Fatal(err)
	}
	bin := helperBinary(t)
	callers := []struct {
		name     string
		pid, uid int
		root     bool
	}{
		{"host root", 0, 0, true},
		{"host nobody", 0, 65534, false},
		{"container root", pid, 0, true},
		{"container uid 1000", pid, 1000, false},
	}
	for _, op := range treeOps() {
		for _, c := range callers {
			want := op.nonRoot
			if c.root {
				want = op.root
			}
			if got := tryOp(t, bin, c.pid, c.uid, dir, op.name); got != want {
				t.Errorf("%s by %s: %v, want %v", op.name, c.name, errName(got), errName(want))
			}
		}
	}
	checkTreeWhole(t, dir)
	if got, err := run(t, pid, "cat", filepath.Join(dir, "ima/runtime_measurements_count")); err != nil || got != "1\n" {
		t.Errorf("container count after the attempts: %q, %v", got, err)
	}
}

func errName(e syscall.Errno) string {
	if e == 0 {
		return "success"
	}
	return unix.ErrnoName(e)
}

// checkTreeWhole checks every entry of the tree is still there, unchanged.
func checkTreeWhole(t *testing.T, dir string) {
	t.Helper()
	want := map[string][]string{
		".":             {"ima", "integrity"},
		"integrity":     {"ima"},
		"integrity/ima": {"ascii_runtime_measurements", "ascii_runtime_measurements_sha1", "ascii_runtime_measurements_sha256", "binary_runtime_measurements", "binary_runtime_measurements_sha1", "binary_runtime_measurements_sha256", "policy", QuoteFileName, "runtime_measurements_count", "violations"},
	}
	for d, names := range want {
		ents, err := os.ReadDir(filepath.Join(dir, d))
		if err != nil {
			t.Errorf("readdir %s: %v", d, err)
			continue
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if strings.Join(got, " ") != strings.Join(names, " ") {
			t.Errorf("%s holds %q, want %q", d, got, names)
		}
		for _, n := range names {
			if _, err := os.Lstat(filepath.Join(dir, d, n)); err != nil {
				t.Errorf("lstat %s/%s: %v", d, n, err)
			}
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "ima/binary_runtime_measurements_sha1")); err != nil || st.Mode().Perm() != 0o440 {
		t.Errorf("list mode after chmod attempts: %v, %v", st, err)
	}
}
