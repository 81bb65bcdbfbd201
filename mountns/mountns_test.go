package mountns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
)

func needRoot(t *testing.T) {
	t.Helper()
	harness.RequireRoot(t)
	harness.RequireTools(t, "unshare", "nsenter")
}

// sleeper starts `unshare <args> sh -c "<setup>; exec sleep 600"` and waits
// until it runs in its own mount namespace. It is killed on cleanup.
func sleeper(t *testing.T, setup string, args ...string) int {
	t.Helper()
	script := "exec sleep 600"
	if setup != "" {
		script = setup + " && echo ready > /dev/stderr && exec sleep 600"
	}
	cmd := exec.Command("unshare", append(args, "sh", "-c", script)...)
	stderr := new(harness.SyncBuffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start unshare: %v", err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	own := nsIno(t, os.Getpid())
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ino, err := readNS(pid)
		if err == nil && ino != own && (setup == "" || strings.Contains(stderr.String(), "ready")) {
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("unshare %v did not get ready: %s", args, stderr.String())
	return 0
}

func readNS(pid int) (uint64, error) {
	var st unix.Stat_t
	err := unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &st)
	return st.Ino, err
}

func nsIno(t *testing.T, pid int) uint64 {
	ino, err := readNS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// nsenter runs args in pid's mount namespace (and root) with a timeout.
func nsenter(t *testing.T, pid int, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := append([]string{"-t", fmt.Sprint(pid), "-m", "-r", "-w"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	return string(out), err
}

// helloRoot is a tiny go-fuse tree: /hello with fixed content.
type helloRoot struct{ fs.Inode }

var _ fs.NodeOnAdder = (*helloRoot)(nil)

func (r *helloRoot) OnAdd(ctx context.Context) {
	f := &fs.MemRegularFile{Data: []byte("hello from imafs\n"), Attr: fuseAttr(0o444)}
	r.AddChild("hello", r.NewPersistentInode(ctx, f, fs.StableAttr{}), false)
}

func hostHasMount(t *testing.T, target string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	// Other developers' tests may mount things on this shared machine: only
	// a line with our mount point and our fs type counts.
	for line := range bytes.Lines(b) {
		if bytes.Contains(line, []byte(" "+target+" ")) && bytes.Contains(line, []byte("fuse.imafs-test")) {
			t.Logf("host mountinfo: %s", line)
			return true
		}
	}
	return false
}

// helloMount is helloRoot mounted at target in pid's namespace and served.
type helloMount struct {
	pid     int
	target  string
	served  chan struct{} // closed when the server ends
	mounted bool
}

// mountHello mounts helloRoot at target in pid's namespace with opts and
// serves it. Unless unmount was called, the mount is lazily unmounted at
// cleanup.
func mountHello(t *testing.T, pid int, target string, opts Options) *helloMount {
	t.Helper()
	dev, err := MountFUSE(pid, target, opts)
	if err != nil {
		t.Fatalf("MountFUSE: %v", err)
	}
	srv, err := Serve(dev, &helloRoot{}, nil)
	if err != nil {
		Unmount(pid, target, true)
		t.Fatalf("Serve: %v", err)
	}
	m := &helloMount{pid: pid, target: target, served: make(chan struct{}), mounted: true}
	go func() { srv.Wait(); close(m.served) }()
	t.Cleanup(func() {
		if m.mounted {
			Unmount(pid, target, true)
		}
	})
	return m
}

// unmount lazily unmounts m and waits for its server to end.
func (m *helloMount) unmount(t *testing.T) {
	t.Helper()
	if err := Unmount(m.pid, m.target, true); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	m.mounted = false
	select {
	case <-m.served:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not end after lazy unmount")
	}
}

// mountAndRead mounts helloRoot at target in pid's namespace, reads it
// back through nsenter, checks the host can't see it, unmounts lazily and
// waits for the server to end.
func mountAndRead(t *testing.T, pid int, target string, opts Options) {
	t.Helper()
	opts.Subtype = "imafs-test"
	opts.AllowOther = true
	m := mountHello(t, pid, target, opts)

	out, err := nsenter(t, pid, "cat", filepath.Join(target, "hello"))
	if err != nil || out != "hello from imafs\n" {
		t.Fatalf("cat inside: %q, %v", out, err)
	}
	info, err := nsenter(t, pid, "cat", "/proc/self/mountinfo")
	if err != nil || !strings.Contains(info, " "+target+" ") || !strings.Contains(info, "fuse.imafs-test") {
		t.Fatalf("mountinfo inside lacks %s fuse.imafs-test: %v\n%s", target, err, info)
	}
	if hostHasMount(t, target) {
		t.Fatalf("host mount table has %s", target)
	}

	m.unmount(t)
	info, _ = nsenter(t, pid, "cat", "/proc/self/mountinfo")
	if strings.Contains(info, "fuse.imafs-test") {
		t.Fatalf("still mounted after Unmount:\n%s", info)
	}
}

func TestMountFUSEPrivateMountNS(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	// A tmpfs exists only in the sleeper's namespace, so dir/only-there/ima
	// is a path that exists only there (MkdirAll creates it there).
	pid := sleeper(t, "mount -t tmpfs imafs-test-tmp "+dir, "-m", "--propagation", "private")
	target := filepath.Join(dir, "only-there", "ima")
	mountAndRead(t, pid, target, Options{MkdirAll: true})
	if _, err := os.Stat(filepath.Join(dir, "only-there")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("host sees %s/only-there: %v", dir, err)
	}
}

func TestMountFUSEUserNamespacedMountNS(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pid := sleeper(t, "mount -t tmpfs imafs-test-tmp "+dir,
		"--user", "--map-root-user", "-m", "--propagation", "private")
	var own, theirs unix.Stat_t
	unix.Stat("/proc/self/ns/user", &own)
	unix.Stat(fmt.Sprintf("/proc/%d/ns/user", pid), &theirs)
	if own.Ino == theirs.Ino {
		t.Fatal("sleeper is not in its own user namespace")
	}
	mountAndRead(t, pid, filepath.Join(dir, "security"), Options{MkdirAll: true})
}

func TestMountFUSEResolvesInsideChroot(t *testing.T) {
	needRoot(t)
	// The process's root is dir/root: target "/mnt" means dir/root/mnt.
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"mnt", "bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox-static")
	}
	copyFile(t, bb, filepath.Join(root, "bin", "busybox"))
	for _, a := range []string{"sh", "sleep", "cat", "mount"} {
		os.Symlink("busybox", filepath.Join(root, "bin", a))
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "--root", root, "/bin/sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	waitRoot(t, pid, root)

	dev, err := MountFUSE(pid, "/mnt", Options{AllowOther: true, Subtype: "imafs-test"})
	if err != nil {
		t.Fatalf("MountFUSE: %v", err)
	}
	srv, err := Serve(dev, &helloRoot{}, nil)
	if err != nil {
		Unmount(pid, "/mnt", true)
		t.Fatal(err)
	}
	defer func() {
		if err := Unmount(pid, "/mnt", true); err != nil {
			t.Errorf("Unmount: %v", err)
		}
		srv.Wait()
	}()
	// nsenter -r uses the target's root, so /mnt/hello is the chroot's.
	out, err := nsenter(t, pid, "/bin/cat", "/mnt/hello")
	if err != nil || out != "hello from imafs\n" {
		t.Fatalf("cat inside chroot: %q, %v", out, err)
	}
	info, _ := nsenter(t, pid, "/bin/cat", "/proc/self/mountinfo")
	_ = info // /proc is not mounted in the chroot; mount table checked via host view below
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil || !bytes.Contains(b, []byte(" /mnt ")) {
		t.Fatalf("pid %d mountinfo (relative to its root) lacks /mnt: %v\n%s", pid, err, b)
	}
}

func waitRoot(t *testing.T, pid int, root string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err == nil && l == root {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d did not chroot to %s", pid, root)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestMountFUSERefusesSharedMount(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pid := sleeper(t, "mount -t tmpfs imafs-test-tmp "+dir+" && mount --make-shared "+dir,
		"-m", "--propagation", "private")
	dev, err := MountFUSE(pid, filepath.Join(dir, "x"), Options{MkdirAll: true, Subtype: "imafs-test"})
	if err == nil {
		dev.Close()
		Unmount(pid, filepath.Join(dir, "x"), true)
		t.Fatal("MountFUSE on a shared mount succeeded")
	}
	if !errors.Is(err, ErrShared) {
		t.Fatalf("want ErrShared, got %v", err)
	}
}

func TestMountFUSEErrors(t *testing.T) {
	needRoot(t)
	pid := sleeper(t, "", "-m", "--propagation", "private")
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		pid    int
		target string
		want   error
	}{
		{"relative target", pid, "tmp/x", nil},
		{"unclean target", pid, "/tmp/../x", nil},
		{"root target", pid, "/", nil},
		{"missing target without MkdirAll", pid, "/nonexistent-imafs-test/x", unix.ENOENT},
		{"exited pid", dead.Process.Pid, "/tmp", unix.ESRCH},
		{"bad pid", -1, "/tmp", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, err := MountFUSE(tc.pid, tc.target, Options{Subtype: "imafs-test"})
			if err == nil {
				dev.Close()
				Unmount(tc.pid, tc.target, true)
				t.Fatal("succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("want %v, got %v", tc.want, err)
			}
		})
	}
	if err := Unmount(pid, "/nonexistent-imafs-test", true); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Unmount of a missing path: %v", err)
	}
}

func TestFindMount(t *testing.T) {
	info := []byte(`22 27 0:21 / /proc rw,relatime shared:5 - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime master:3 - tmpfs tmpfs rw
32 31 0:29 / /x rw shared:7 master:3 - fuse.imafs imafs rw
`)
	for _, tc := range []struct {
		id      uint64
		want    mountEntry
		wantErr bool
	}{
		{22, mountEntry{27, true, "proc"}, false},
		{27, mountEntry{1, false, "ext4"}, false},
		{31, mountEntry{23, false, "tmpfs"}, false},
		{32, mountEntry{31, true, "fuse.imafs"}, false},
		{99, mountEntry{}, true},
	} {
		got, err := findMount(info, tc.id)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("mount %d: got %+v, %v; want %+v (err %v)", tc.id, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestMountAttrs(t *testing.T) {
	for _, tc := range []struct {
		flags uintptr
		want  int
	}{
		{0, 0},
		{unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC},
		{unix.MS_RDONLY | unix.MS_NOSUID, unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID},
	} {
		if got := mountAttrs(tc.flags); got != tc.want {
			t.Errorf("mountAttrs(%#x) = %#x, want %#x", tc.flags, got, tc.want)
		}
	}
}

func fuseAttr(mode uint32) (a fuse.Attr) { a.Mode = syscall.S_IFREG | mode; return }

// TestNoThreadLeftInNamespace: after many trips into a container's mount
// namespace, every thread of the daemon is back in its own namespace (none
// was kept, and the main thread, which the runtime can't terminate, was
// never used).
func TestNoThreadLeftInNamespace(t *testing.T) {
	needRoot(t)
	pid := sleeper(t, "", "-m", "--propagation", "private")
	theirs := nsIno(t, pid)
	own := nsIno(t, os.Getpid())
	for i := 0; i < 200; i++ {
		var got uint64
		err := InNamespace(pid, func(hostProc int) error {
			var st unix.Stat_t
			if err := unix.Fstatat(hostProc, "thread-self/ns/mnt", &st, 0); err != nil {
				return err
			}
			got = st.Ino
			return nil
		})
		if err != nil || got != theirs {
			t.Fatalf("InNamespace: ns %d (want %d), %v", got, theirs, err)
		}
	}
	// A thread whose goroutine ended while locked exits shortly after, not
	// at once: wait for that, but a thread kept in the namespace (say, the
	// main thread, which the runtime never terminates) stays there.
	var stuck []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		stuck = stuck[:0]
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			var st unix.Stat_t
			if err := unix.Stat("/proc/self/task/"+task.Name()+"/ns/mnt", &st); err != nil {
				continue // thread exited meanwhile
			}
			if st.Ino != own {
				stuck = append(stuck, task.Name())
			}
		}
		if len(stuck) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, tid := range stuck {
		t.Errorf("thread %s is still in mount ns %d", tid, theirs)
	}
}

// TestRemountAfterDeadServer is the restart plan: a daemon that died leaves
// a dead mount (ENOTCONN) in the container; the new daemon lazily unmounts
// it and mounts a fresh connection at the same place.
func TestRemountAfterDeadServer(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pid := sleeper(t, "mount -t tmpfs imafs-test-tmp "+dir, "-m", "--propagation", "private")
	target := filepath.Join(dir, "security")
	opts := Options{MkdirAll: true, AllowOther: true, Subtype: "imafs-test"}
	dev, err := MountFUSE(pid, target, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Serve(dev, &helloRoot{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Unmount(pid, target, true) })
	if out, err := nsenter(t, pid, "cat", target+"/hello"); err != nil || out != "hello from imafs\n" {
		t.Fatalf("cat: %q, %v", out, err)
	}
	// Mounting again over a live imafs mount is refused too.
	if dev, err := MountFUSE(pid, target, opts); !errors.Is(err, ErrMounted) {
		if err == nil {
			dev.Close()
		}
		t.Fatalf("MountFUSE over a live mount: %v, want ErrMounted", err)
	}
	// "Kill the daemon": abort the connection the way the kernel does when
	// the last /dev/fuse fd goes away (fusectl abort needs the connection
	// id; closing our only fd is what a crash does).
	abortConnection(t, pid, target)
	srv.Wait()
	out, err := nsenter(t, pid, "cat", target+"/hello")
	if err == nil || !strings.Contains(out, "not connected") {
		t.Fatalf("dead mount: cat gave %q, %v; want ENOTCONN", out, err)
	}
	if dev, err := MountFUSE(pid, target, opts); !errors.Is(err, ErrMounted) {
		if err == nil {
			dev.Close()
			Unmount(pid, target, true)
		}
		t.Fatalf("MountFUSE over a dead mount: %v, want ErrMounted", err)
	}
	if err := Unmount(pid, target, true); err != nil {
		t.Fatalf("lazy Unmount of a dead mount: %v", err)
	}
	mountAndRead(t, pid, target, opts)
}

// abortConnection aborts the FUSE connection mounted at target in pid's
// namespace through /sys/fs/fuse/connections/N/abort (N = the mount's
// device minor), as if its daemon had died.
func abortConnection(t *testing.T, pid int, target string) {
	t.Helper()
	var minor uint32
	err := InNamespace(pid, func(int) error {
		var st unix.Stat_t
		// stat of the mountpoint's parent entry would ask the server;
		// Lstat on the root goes to the fuse root inode (served: alive).
		if err := unix.Lstat(target, &st); err != nil {
			return err
		}
		minor = unix.Minor(st.Dev)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctl := "/sys/fs/fuse/connections"
	if _, err := os.Stat(ctl + "/" + fmt.Sprint(minor)); err != nil {
		if out, err := exec.Command("mount", "-t", "fusectl", "none", ctl).CombinedOutput(); err != nil {
			t.Skipf("no fusectl: %v %s", err, out)
		}
		t.Cleanup(func() { unix.Unmount(ctl, unix.MNT_DETACH) })
	}
	if err := os.WriteFile(fmt.Sprintf("%s/%d/abort", ctl, minor), []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkMountServeUnmount is the cost of attaching imafs to a container
// and detaching it again: MountFUSE + Serve (INIT handshake) + lazy Unmount
// + end of the serve loop.
func BenchmarkMountServeUnmount(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	dir := b.TempDir()
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs imafs-bench "+dir+" && mkdir "+dir+"/m && echo ready && exec sleep 600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil {
		b.Fatal(err)
	}
	target := dir + "/m"
	for b.Loop() {
		dev, err := MountFUSE(cmd.Process.Pid, target, Options{AllowOther: true, Subtype: "imafs-test"})
		if err != nil {
			b.Fatal(err)
		}
		srv, err := Serve(dev, &helloRoot{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := Unmount(cmd.Process.Pid, target, true); err != nil {
			b.Fatal(err)
		}
		srv.Wait()
	}
}
