package harness

import (
	"time"

	"golang.org/x/sys/unix"
)

// pidfdExited waits up to timeout for the process of pidfd to exit and
// reports whether it has. poll(2) is never restarted after a signal
// handler, whatever SA_RESTART says: a SIGCHLD from any child of the test
// (or the runtime's preemption signal) makes it fail with EINTR, which is
// retried here with the time left, never read as "exited" or "alive".
func pidfdExited(pidfd int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		left := max(time.Until(deadline), 0)
		n, err := unix.Poll(fds, int(left/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}
