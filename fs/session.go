package fs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/nsresolve"
	"github.com/imafs/imafs/policy"
)

// writeSession is what the policy file needs of a kernel-style policy write
// session: Write takes one write(2) (returning the kernel's count or error),
// Commit returns the rules to apply at close (an error: apply nothing).
type writeSession interface {
	Write(p []byte, off int64) (int, error)
	Commit() (policy.Policy, error)
}

// pinRoot opens the root directory of the caller c (O_PATH) while it is
// blocked in its OPEN: "/path" loads of the handle resolve there, wherever
// the pid number points later. The pid is held by a pidfd while the root is
// opened and checked afterwards to be the same task in the same mount
// namespace c was resolved in, so the fd is the opener's root, never the
// root of a task that reused the number.
func pinRoot(c *nsresolve.Caller) (*os.File, error) {
	// The writing thread's root (a thread may have its own: unshare(CLONE_FS)),
	// through a thread pidfd where the kernel has them (6.9).
	tid, proc := c.TID, "/proc/"+strconv.Itoa(c.PID)+"/task/"+strconv.Itoa(c.TID)
	pidfd, err := unix.PidfdOpen(tid, unix.PIDFD_THREAD)
	if err != nil && tid != c.PID {
		tid, proc = c.PID, "/proc/"+strconv.Itoa(c.PID)
		pidfd, err = unix.PidfdOpen(tid, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("pin root of pid %d: pidfd: %w", c.PID, err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.Open(proc+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("pin root of pid %d: %w", c.PID, err)
	}
	root := os.NewFile(uintptr(fd), proc+"/root")
	var st unix.Stat_t
	statErr := unix.Stat(proc+"/ns/mnt", &st)
	alive := unix.PidfdSendSignal(pidfd, 0, nil, 0)
	if statErr != nil || alive != nil || (nsresolve.NSID{Dev: st.Dev, Ino: st.Ino}) != c.MntNS {
		root.Close()
		return nil, fmt.Errorf("pin root of pid %d: %w", c.PID, nsresolve.ErrGone)
	}
	return root, nil
}

// policyFileLoader returns the loader for "/path" writes of a handle whose
// opener's root is root: the path is resolved inside that root (as the
// kernel resolves it against the writer's root), never escaping it through
// symlinks or "..", and read with kernel_read_file's errors: a file that is
// not regular or is empty is EINVAL, one larger than maxBytes EFBIG.
// Nothing of the file's content goes into an error (errors are logged).
func policyFileLoader(root *os.File, maxBytes int64) func(path string) ([]byte, error) {
	return func(path string) ([]byte, error) {
		// O_PATH first: a device or FIFO is refused without being opened
		// by the daemon (the kernel's answer for it is EINVAL as well).
		pfd, err := unix.Openat2(int(root.Fd()), path, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
		defer unix.Close(pfd)
		var st unix.Stat_t
		if err := unix.Fstat(pfd, &st); err != nil {
			return nil, fmt.Errorf("stat: %w", err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size <= 0 {
			return nil, fmt.Errorf("not a regular file with content: %w", syscall.EINVAL)
		}
		if st.Size > maxBytes {
			return nil, fmt.Errorf("larger than %d bytes: %w", maxBytes, syscall.EFBIG)
		}
		fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
		f := os.NewFile(uintptr(fd), "policy file")
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		if int64(len(data)) > maxBytes {
			return nil, fmt.Errorf("larger than %d bytes: %w", maxBytes, syscall.EFBIG)
		}
		return data, nil
	}
}

// newWriteSession starts a kernel-style policy write session for ns whose
// "/path" loads resolve in root (nil: such loads fail with EINVAL) and
// whose rules must fit in what ns's limits leave.
func newWriteSession(ns *imans.Namespace, root *os.File) writeSession {
	room := ns.PolicyRoom()
	s := &policy.Session{
		Options: policy.ParseOptions{DefaultPolicyActive: ns.DefaultPolicyActive()},
		Room:    &room,
	}
	if root != nil {
		s.ReadFile = policyFileLoader(root, ns.PolicyLimits().MaxBytes)
	}
	return s
}

// errnoOfPolicy maps a policy.Session or LoadPolicy error to the kernel's
// errno (and ENOSPC for imafs's own limits).
func errnoOfPolicy(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case errors.Is(err, policy.ErrAccess):
		return syscall.EACCES
	case errors.Is(err, policy.ErrNoSpace):
		return syscall.ENOSPC
	case errors.Is(err, policy.ErrRange):
		return syscall.ERANGE
	case errors.Is(err, policy.ErrInvalid):
		return syscall.EINVAL
	case errors.As(err, &errno):
		return errno
	}
	// A policy file that can't be read: the kernel returns the read error;
	// anything else is a bad request.
	return syscall.EINVAL
}
