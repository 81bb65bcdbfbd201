package mountns

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// moveMountBeneath is MOVE_MOUNT_BENEATH (Linux 6.5): mount beneath the
// top mount at the target path.
const moveMountBeneath = 0x200

// SwapFUSE replaces the FUSE mount at target in pid's mount namespace (a
// predecessor's: live during an upgrade, dead after a crash) with a fresh
// connection made with opts, without a moment where target has no such
// mount: the new mount is made with fsopen/fsmount, slid beneath the old
// one (move_mount MOVE_MOUNT_BENEATH), and the old one is then detached
// (MNT_DETACH: descriptors opened on it keep working while their server
// lives). On a kernel without MOVE_MOUNT_BENEATH the old mount is detached
// first (a window of two system calls); beneath reports which happened.
// Like MountFUSE it refuses a target on a shared mount (ErrShared) unless
// opts.AllowShared. It returns the /dev/fuse file; serve it with Serve.
func SwapFUSE(pid int, target string, opts Options) (dev *os.File, beneath bool, err error) {
	fail := func(err error) (*os.File, bool, error) {
		return nil, false, fmt.Errorf("swap mount %s in mount ns of pid %d: %w", target, pid, err)
	}
	if err := checkTarget(target); err != nil {
		return fail(err)
	}
	if err := opts.normalize(); err != nil {
		return fail(err)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("open /dev/fuse: %w", err))
	}
	dev = os.NewFile(uintptr(fd), "/dev/fuse")
	mfd, err := fuseMountFD(fd, opts)
	if err != nil {
		dev.Close()
		return fail(err)
	}
	defer unix.Close(mfd)
	var mountinfo []byte
	readInfo := func(hostProc int) (err error) {
		mountinfo, err = readMountinfo(hostProc)
		return err
	}
	err = enter(pid, readInfo, func(int) error {
		// The new mount joins the mount the old one sits on: that one's
		// propagation decides where it would appear.
		parent, err := swapParent(mountinfo, target, "fuse."+opts.Subtype)
		if err != nil {
			return err
		}
		if parent.shared && !opts.AllowShared {
			return fmt.Errorf("%s: %w", target, ErrShared)
		}
		beneath, err = moveBeneath(mfd, target)
		return err
	})
	if err != nil {
		dev.Close()
		return fail(err)
	}
	return dev, beneath, nil
}

// swapParent finds the mount that the FUSE mount of type fstype at target
// sits on. A dead FUSE mount answers statx with ENOTCONN unless the cached
// attributes do (AT_STATX_DONT_SYNC); failing that, the mount holding
// target's directory stands in.
func swapParent(mountinfo []byte, target, fstype string) (mountEntry, error) {
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, target, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &stx)
	if err != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
		return mountOf(mountinfo, filepath.Dir(target))
	}
	top, err := findMount(mountinfo, stx.Mnt_id)
	if err != nil {
		return mountEntry{}, err
	}
	if top.fstype != fstype {
		return mountEntry{}, fmt.Errorf("%s: a %s mount, not %s", target, top.fstype, fstype)
	}
	return findMount(mountinfo, top.parent)
}

// moveBeneath attaches the detached mount mfd beneath the mount at target
// and detaches that one; without MOVE_MOUNT_BENEATH it detaches first.
func moveBeneath(mfd int, target string) (beneath bool, err error) {
	err = unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH|moveMountBeneath)
	if err != nil {
		if uerr := unix.Unmount(target, unix.MNT_DETACH); uerr != nil {
			return false, fmt.Errorf("move_mount beneath: %w; unmount: %v", err, uerr)
		}
		if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return false, fmt.Errorf("move_mount: %w", err)
		}
		return false, nil
	}
	// The old mount is on top now: detach it (no request reaches its
	// server, dead or alive).
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
		return true, fmt.Errorf("detach the replaced mount: %w", err)
	}
	return true, nil
}

// fuseMountFD makes a detached FUSE mount over /dev/fuse fd with the
// options MountFUSE gives mount(2).
func fuseMountFD(fd int, opts Options) (int, error) {
	fsfd, err := unix.Fsopen("fuse", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen fuse: %w", err)
	}
	defer unix.Close(fsfd)
	kvs := [][2]string{{"source", opts.FSName}, {"subtype", opts.Subtype}, {"fd", strconv.Itoa(fd)},
		{"rootmode", "40000"}, {"user_id", "0"}, {"group_id", "0"}}
	if opts.MaxRead > 0 {
		kvs = append(kvs, [2]string{"max_read", strconv.Itoa(opts.MaxRead)})
	}
	for _, kv := range kvs {
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
			return -1, fmt.Errorf("fsconfig %s=%s: %w", kv[0], kv[1], err)
		}
	}
	if opts.AllowOther {
		if err := unix.FsconfigSetFlag(fsfd, "allow_other"); err != nil {
			return -1, fmt.Errorf("fsconfig allow_other: %w", err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("fsconfig create: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, mountAttrs(opts.Flags))
	if err != nil {
		return -1, fmt.Errorf("fsmount: %w", err)
	}
	return mfd, nil
}

// mountAttrs turns mount(2) flags into fsmount's MOUNT_ATTR_* bits.
func mountAttrs(flags uintptr) int {
	var attrs int
	for _, f := range []struct {
		ms   uintptr
		attr int
	}{
		{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY}, {unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID},
		{unix.MS_NODEV, unix.MOUNT_ATTR_NODEV}, {unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
	} {
		if flags&f.ms != 0 {
			attrs |= f.attr
		}
	}
	return attrs
}
