package mountns

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options are the mount options of a FUSE connection made by MountFUSE.
type Options struct {
	FSName     string  // source shown in mountinfo ("imafs" if empty)
	Subtype    string  // the type is "fuse.<Subtype>" ("imafs" if empty)
	AllowOther bool    // let every uid in the namespace use the mount (needed for containers)
	MaxRead    int     // max_read mount option; 0: kernel default
	Flags      uintptr // mount(2) flags; 0 means MS_NOSUID|MS_NODEV|MS_NOEXEC, like securityfs
	// MkdirAll creates missing directories of target (mode 0755) inside the
	// namespace. Without it the target must exist (/sys/kernel/security
	// exists in every sysfs).
	MkdirAll bool
	// AllowShared permits mounting onto a mount that is shared, i.e. whose
	// mounts propagate to peers (possibly the host's namespace). Off by
	// default: MountFUSE refuses rather than leak the mount elsewhere.
	AllowShared bool
}

// ErrMounted is wrapped by MountFUSE's error when target already is (or
// lies inside) a FUSE mount of the same type: a dead one left by a crashed
// daemon, or a live one. Unmount it (lazily) first; MountFUSE never stacks.
var ErrMounted = errors.New("target is already a fuse mount of this type")

// ErrShared is wrapped by MountFUSE's error when the target lies on a shared
// mount and Options.AllowShared is false.
var ErrShared = errors.New("target is on a shared mount (mounts would propagate to its peers)")

// normalize fills in the defaults and checks the names.
func (o *Options) normalize() error {
	if o.FSName == "" {
		o.FSName = "imafs"
	}
	if o.Subtype == "" {
		o.Subtype = "imafs"
	}
	if strings.ContainsAny(o.FSName+o.Subtype, ", \t\n") {
		return fmt.Errorf("fsname %q / subtype %q: no commas or spaces allowed", o.FSName, o.Subtype)
	}
	if o.Flags == 0 {
		o.Flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	}
	return nil
}

func (o Options) data(fd int) string {
	d := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	if o.AllowOther {
		d += ",allow_other"
	}
	if o.MaxRead > 0 {
		d += ",max_read=" + strconv.Itoa(o.MaxRead)
	}
	return d
}

// MountFUSE opens /dev/fuse and mounts it at target inside the mount
// namespace of process pid, with target resolved against that process's root
// directory (so a pivot_root'ed or chroot'ed container's own path). It returns
// the /dev/fuse file; serve it with Serve. The mount is made in place (not a
// bind mount): it appears only in pid's mount namespace and its peers.
//
// The fd is opened O_CLOEXEC so no child process of the daemon can inherit
// (and so keep alive) the connection.
func MountFUSE(pid int, target string, opts Options) (*os.File, error) {
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("mount fuse in mount ns of pid %d: %w", pid, err)
	}
	if err := opts.normalize(); err != nil {
		return nil, fmt.Errorf("mount fuse in mount ns of pid %d: %w", pid, err)
	}
	flags := opts.Flags
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mount fuse in mount ns of pid %d: open /dev/fuse: %w", pid, err)
	}
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	// The mount table is read before the chroot: from inside the root,
	// mounts whose root lies outside it are not listed in mountinfo.
	var mountinfo []byte
	readInfo := func(hostProc int) (err error) {
		mountinfo, err = readMountinfo(hostProc)
		return err
	}
	err = enter(pid, readInfo, func(hostProc int) error {
		if opts.MkdirAll {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		}
		m, err := mountOf(mountinfo, target)
		if err != nil {
			return err
		}
		if m.fstype == "fuse."+opts.Subtype {
			return fmt.Errorf("%s: %w", target, ErrMounted)
		}
		if m.shared && !opts.AllowShared {
			return fmt.Errorf("%s: %w", target, ErrShared)
		}
		if err := unix.Mount(opts.FSName, target, "fuse."+opts.Subtype, flags, opts.data(fd)); err != nil {
			return fmt.Errorf("mount %s: %w", target, err)
		}
		return nil
	})
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("mount fuse in mount ns of pid %d: %w", pid, err)
	}
	return dev, nil
}

// Unmount unmounts target inside the mount namespace of pid (resolved
// against pid's root like MountFUSE). lazy detaches it (MNT_DETACH) even
// while files are open or the server is dead; the FUSE connection ends once
// the last user lets go.
func Unmount(pid int, target string, lazy bool) error {
	if err := checkTarget(target); err != nil {
		return fmt.Errorf("unmount in mount ns of pid %d: %w", pid, err)
	}
	flags := unix.UMOUNT_NOFOLLOW
	if lazy {
		flags |= unix.MNT_DETACH
	}
	err := InNamespace(pid, func(int) error {
		if err := unix.Unmount(target, flags); err != nil {
			return fmt.Errorf("umount %s: %w", target, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("unmount in mount ns of pid %d: %w", pid, err)
	}
	return nil
}

func checkTarget(target string) error {
	if !filepath.IsAbs(target) || filepath.Clean(target) != target || target == "/" {
		return fmt.Errorf("target %q: must be a clean absolute path other than /", target)
	}
	return nil
}

// InNamespace runs fn on a fresh OS thread that has joined the mount
// namespace of process pid and chroot'ed to pid's root directory (cwd "/").
// The thread is never returned to the Go scheduler: it exits with the
// goroutine, so it can't pin the namespace or leak its root to other code.
// fn must not start goroutines that expect to run in the namespace.
// hostProc is an O_PATH fd of the daemon's /proc: inside the container's
// root "/proc" is missing or belongs to another pid namespace, so reach
// /proc/thread-self through openat(hostProc, "thread-self/...").
//
// pid is checked with a pidfd: if the process died (and its pid might have
// been reused) while its namespace and root were being opened, the call fails.
func InNamespace(pid int, fn func(hostProc int) error) error {
	return enter(pid, nil, fn)
}

// enter is InNamespace with a hook run in the namespace before the chroot
// (root and cwd are then the namespace's root).
func enter(pid int, pre, fn func(hostProc int) error) error {
	if pid <= 0 {
		return fmt.Errorf("pid %d: invalid", pid)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	proc := "/proc/" + strconv.Itoa(pid)
	nsfd, err := unix.Open(proc+"/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s/ns/mnt: %w", proc, err)
	}
	defer unix.Close(nsfd)
	rootfd, err := unix.Open(proc+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s/root: %w", proc, err)
	}
	defer unix.Close(rootfd)
	procfd, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /proc: %w", err)
	}
	defer unix.Close(procfd)
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return fmt.Errorf("pid %d exited while opening its namespace: %w", pid, err)
	}

	work := func() error {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unshare CLONE_FS: %w", err)
		}
		if err := unix.Setns(nsfd, unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("setns mnt of pid %d: %w", pid, err)
		}
		if pre != nil {
			if err := pre(procfd); err != nil {
				return err
			}
		}
		if err := unix.Fchdir(rootfd); err != nil {
			return fmt.Errorf("fchdir to root of pid %d: %w", pid, err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("chroot to root of pid %d: %w", pid, err)
		}
		if err := unix.Chdir("/"); err != nil {
			return fmt.Errorf("chdir /: %w", err)
		}
		return fn(procfd)
	}
	done := make(chan error, 1)
	go onDisposableThread(work, done)
	return <-done
}

// onDisposableThread runs work on a locked OS thread that is thrown away
// afterwards (no UnlockOSThread: the runtime terminates a locked thread when
// its goroutine exits), and sends its result to done.
//
// Never on the main thread: the runtime can't terminate the thread group
// leader, it wedges it instead, so the leader would stay in the container's
// mount namespace forever, pinning it, and /proc/self/{mountinfo,root,ns/mnt}
// (which follow the leader) would show the container's view to the whole
// daemon. If the goroutine lands on the main thread, it keeps that thread
// locked (unchanged) while a second goroutine, which then can't be scheduled
// there, does the work.
func onDisposableThread(work func() error, done chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		inner := make(chan error, 1)
		go onDisposableThread(work, inner)
		err := <-inner
		runtime.UnlockOSThread() // this thread was not changed
		done <- err
		return
	}
	done <- work()
}

// mountOf finds the mount holding path (in the calling thread's namespace)
// in mountinfo (the namespace's full mount table). A dead FUSE mount at path
// gives ENOTCONN, wrapped with ErrMounted.
func mountOf(mountinfo []byte, path string) (mountEntry, error) {
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_MNT_ID, &stx)
	if errors.Is(err, unix.ENOTCONN) {
		return mountEntry{}, fmt.Errorf("statx %s: %w (%w)", path, ErrMounted, err)
	}
	if err != nil {
		return mountEntry{}, fmt.Errorf("statx %s: %w", path, err)
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return mountEntry{}, fmt.Errorf("statx %s: no mount id", path)
	}
	return findMount(mountinfo, stx.Mnt_id)
}

// mountEntry is what MountFUSE needs of a mountinfo line.
type mountEntry struct {
	parent uint64 // the id of the mount it sits on
	shared bool   // optional fields carry a "shared:N" peer group
	fstype string // e.g. "sysfs", "fuse.imafs"
}

// findMount looks up mount id in mountinfo text.
func findMount(info []byte, id uint64) (mountEntry, error) {
	want := strconv.FormatUint(id, 10)
	for line := range bytes.Lines(info) {
		f := strings.Fields(string(line))
		if len(f) < 7 || f[0] != want {
			continue
		}
		var m mountEntry
		m.parent, _ = strconv.ParseUint(f[1], 10, 64)
		for i, opt := range f[6:] {
			if opt == "-" {
				if j := 6 + i + 1; j < len(f) {
					m.fstype = f[j]
				}
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				m.shared = true
			}
		}
		return m, nil
	}
	return mountEntry{}, fmt.Errorf("mount id %s not in mountinfo", want)
}

// readMountinfo reads the calling thread's mount table through the host's
// /proc.
func readMountinfo(hostProc int) ([]byte, error) {
	fd, err := unix.Openat(hostProc, "thread-self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /proc/thread-self/mountinfo: %w", err)
	}
	f := os.NewFile(uintptr(fd), "/proc/thread-self/mountinfo")
	defer f.Close()
	info, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read /proc/thread-self/mountinfo: %w", err)
	}
	return info, nil
}

// Serve serves root on dev, a /dev/fuse file mounted by MountFUSE, and
// returns the running server (its Serve loop runs in a goroutine; Wait for it
// after Unmount). It uses go-fuse's "/dev/fd/N" mountpoint convention, so
// go-fuse mounts nothing itself and MountOptions' mount flags (AllowOther,
// FsName, Options...) are ignored: they were fixed by MountFUSE. MaxWrite
// etc. still apply to the protocol.
//
// Serve takes ownership of dev: go-fuse gets a duplicate fd (it closes it
// when serving ends) and dev is closed, on success and on failure. On failure
// the mount is left behind dead (ENOTCONN); Unmount it. The server's own
// Unmount method can't work for such a mount: use this package's Unmount.
func Serve(dev *os.File, root fs.InodeEmbedder, opts *fs.Options) (*fuse.Server, error) {
	var mo fuse.MountOptions
	if opts != nil {
		mo = opts.MountOptions
	}
	return ServeRaw(dev, fs.NewNodeFS(root, opts), mo)
}

// ServeRaw is Serve for a FUSE protocol handler of the caller's (one that
// wraps go-fuse's node file system, say).
func ServeRaw(dev *os.File, raw fuse.RawFileSystem, mo fuse.MountOptions) (*fuse.Server, error) {
	defer dev.Close()
	dup, err := dupCloexec(dev)
	if err != nil {
		return nil, fmt.Errorf("serve fuse: %w", err)
	}
	mo.DirectMount, mo.DirectMountStrict = false, false
	// With an absolute "/dev/fd/N" mountpoint NewServer can only fail in
	// the INIT handshake, after it wrapped (and then closed) dup.
	srv, err := fuse.NewServer(raw, "/dev/fd/"+strconv.Itoa(dup), &mo)
	if err != nil {
		return nil, fmt.Errorf("serve fuse on /dev/fd/%d: %w", dup, err)
	}
	go srv.Serve()
	return srv, nil
}

// dupCloexec returns a close-on-exec duplicate of dev's descriptor (at 3
// or above), which the caller owns.
func dupCloexec(dev *os.File) (int, error) {
	sc, err := dev.SyscallConn()
	if err != nil {
		return -1, err
	}
	dup, dupErr := -1, error(nil)
	if err := sc.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, fmt.Errorf("dup /dev/fuse fd: %w", dupErr)
	}
	return dup, nil
}
