package nsresolve

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errNoPidfdInfo means the kernel lacks thread pidfds (6.9) or
// PIDFD_GET_INFO (6.13): Caller falls back to /proc.
var errNoPidfdInfo = errors.New("no PIDFD_THREAD / PIDFD_GET_INFO")

// callerPidfd is Caller without path walks or text parsing: a thread pidfd,
// PIDFD_GET_INFO for the thread group and ids, PIDFD_GET_*_NAMESPACE ioctls
// for the namespaces, and capget(2) for CapEff.
//
// capget takes a number, not the pidfd; it is called first and PIDFD_GET_INFO
// after it: if the thread was alive at pidfd_open and still is at
// PIDFD_GET_INFO, its tid could not name another thread in between.
func (r *Resolver) callerPidfd(tid int) (*Caller, error) {
	pidfd, err := unix.PidfdOpen(tid, unix.PIDFD_THREAD)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			return nil, errNoPidfdInfo
		}
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("resolve caller tid %d: pidfd_open: %w (%w)", tid, ErrGone, err)
		}
		return nil, fmt.Errorf("resolve caller tid %d: pidfd_open: %w", tid, err)
	}
	defer unix.Close(pidfd)

	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3, Pid: int32(tid)}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("resolve caller tid %d: capget: %w", tid, goneErr(err))
	}

	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID | unix.PIDFD_INFO_CREDS}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(pidfd), unix.PIDFD_GET_INFO, uintptr(unsafe.Pointer(&info))); e != 0 {
		if e == unix.ENOTTY || e == unix.EINVAL {
			return nil, errNoPidfdInfo
		}
		return nil, fmt.Errorf("resolve caller tid %d: PIDFD_GET_INFO: %w", tid, goneErr(e))
	}
	if info.Mask&(unix.PIDFD_INFO_PID|unix.PIDFD_INFO_CREDS) != unix.PIDFD_INFO_PID|unix.PIDFD_INFO_CREDS {
		return nil, errNoPidfdInfo
	}
	c := &Caller{
		TID: tid, PID: int(info.Tgid),
		UID: info.Ruid, EUID: info.Euid, GID: info.Rgid, EGID: info.Egid,
		CapEff: uint64(data[0].Effective) | uint64(data[1].Effective)<<32,
	}
	if int(info.Pid) != tid {
		return nil, fmt.Errorf("resolve caller tid %d: pidfd names tid %d: %w", tid, info.Pid, ErrGone)
	}
	for _, ns := range []struct {
		req  uint
		dst  *NSID
		name string
	}{
		{unix.PIDFD_GET_USER_NAMESPACE, &c.UserNS, "user"},
		{unix.PIDFD_GET_MNT_NAMESPACE, &c.MntNS, "mnt"},
		{unix.PIDFD_GET_PID_NAMESPACE, &c.PidNS, "pid"},
	} {
		fd, err := unix.IoctlRetInt(pidfd, ns.req)
		if err != nil {
			if errors.Is(err, unix.ENOTTY) {
				return nil, errNoPidfdInfo
			}
			if errors.Is(err, unix.EOPNOTSUPP) && exitedSoon(pidfd) {
				// The task dropped its namespaces in do_exit before
				// its pidfd was notified: it is gone, not unsupported.
				err = fmt.Errorf("%w (%w)", ErrGone, err)
			}
			return nil, fmt.Errorf("resolve caller tid %d: PIDFD_GET_%s_NAMESPACE: %w", tid, ns.name, goneErr(err))
		}
		id, err := fstatNS(fd)
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("resolve caller tid %d: %w", tid, err)
		}
		*ns.dst = id
		if ns.req == unix.PIDFD_GET_PID_NAMESPACE {
			r.cacheFD(fd, id) // takes fd
		} else {
			unix.Close(fd)
		}
	}
	return c, nil
}

// exitedSoon reports whether the task behind pidfd exits within a moment:
// a pidfd turns readable when its task has exited. The kernel answers a
// namespace ioctl with EOPNOTSUPP both for a namespace type it lacks and
// for a task already past exit_task_namespaces, which is notified on its
// pidfd microseconds later.
func exitedSoon(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 100)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n == 1
	}
}

func goneErr(err error) error {
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%w (%w)", ErrGone, err)
	}
	return err
}
