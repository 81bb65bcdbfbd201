package nsresolve

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// errNoPidfdInfo means the kernel lacks thread pidfds (6.9) or
// PIDFD_GET_INFO (6.13): Caller falls back to /proc.
var errNoPidfdInfo = errors.New("no PIDFD_THREAD / PIDFD_GET_INFO")

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
