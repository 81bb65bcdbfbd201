package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultTimeout bounds every command the harness runs (and each wait for a
// container to become ready).
var DefaultTimeout = 30 * time.Second

// UserNSBase is the host uid (and gid) that root of a user-namespaced
// container maps to; 65536 ids are mapped.
const (
	UserNSBase  = 100000
	UserNSCount = 65536
)

// NonRootUID is the unprivileged user in BusyboxRootfs's /etc/passwd.
const NonRootUID = 1000

// RequireRoot skips t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// RequireTools skips t unless every tool is in $PATH.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// Run runs a command with DefaultTimeout and returns its combined output.
// The error carries the command line and its output.
func Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return out.String(), nil
}

// TempDir returns a new directory that every uid can traverse (mode 0755,
// under os.TempDir(), removed on cleanup). Use it for anything a
// user-namespaced container must reach: t.TempDir()'s parents are 0700, so
// container root (host uid 100000) could not get in.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "imafs-harness-")
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("harness: %v", err)
	}
	return dir
}

// checkTraversable fails t unless every directory from / to dir can be
// searched by others (needed when a container root is not host root).
func checkTraversable(t testing.TB, dir string) {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	for p := abs; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("harness: %v", err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			t.Fatalf("harness: %s (mode %v) is not searchable by a user-namespaced container's root; use harness.TempDir", p, st.Mode().Perm())
		}
		if p == "/" {
			return
		}
	}
}

// BusyboxRootfs fills dir with a minimal root filesystem: busybox-static
// and a symlink per applet in /bin, /etc/passwd and /etc/group with root and
// a non-root user 1000 ("user"), and empty /proc, /sys, /dev, /tmp, /root,
// /home/user, /sys/kernel/security is NOT created (sysfs provides it).
func BusyboxRootfs(t testing.TB, dir string) {
	t.Helper()
	RequireTools(t, "busybox")
	bb, _ := exec.LookPath("busybox")
	if out, err := exec.Command("file", "-L", bb).Output(); err == nil && bytes.Contains(out, []byte("dynamically linked")) {
		t.Skipf("%s is not static (install busybox-static)", bb)
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home/user", "run", "var"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatalf("busybox rootfs: %v", err)
		}
	}
	os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
	os.Chown(filepath.Join(dir, "home/user"), NonRootUID, NonRootUID)
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatalf("busybox rootfs: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		t.Fatalf("busybox rootfs: %v", err)
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" {
			continue
		}
		link := filepath.Join(dir, "bin", applet)
		if err := os.Symlink("busybox", link); err != nil && !os.IsExist(err) {
			t.Fatalf("busybox rootfs: %v", err)
		}
	}
	files := map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":    "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
		"etc/hostname": "imafs-test\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatalf("busybox rootfs: %v", err)
		}
	}
}

// children returns the pids of the children of pid (CONFIG_PROC_CHILDREN).
func children(pid int) ([]int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// NSIno returns the inode of /proc/PID/ns/KIND ("pid", "mnt", "user", ...).
func NSIno(pid int, kind string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// errStop, returned by a waitFor condition, ends the wait at once.
var errStop = errors.New("gave up: process exited")

// waitFor polls cond every 5ms until it returns true, errStop, or
// DefaultTimeout passes.
func waitFor(what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(DefaultTimeout)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return nil
		}
		if errors.Is(err, errStop) {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		last = err
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("timed out waiting for %s (last error: %v)", what, last)
}
