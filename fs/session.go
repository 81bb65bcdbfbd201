package fs

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/policy"
)

// writeSession is what the policy file needs of a kernel-style policy write
// session: Write takes one write(2) (returning the kernel's count or error),
// Commit returns the rules to apply at close (an error: apply nothing).
type writeSession interface {
	Write(p []byte, off int64) (int, error)
	Commit() (policy.Policy, error)
}

// maxPolicyFile bounds a policy file loaded by path.
const maxPolicyFile = 1 << 20

// policyFileLoader returns the loader for "/path" writes by the task pid: the
// path is resolved inside that task's root (as the kernel resolves it against
// the writer's root), never escaping it through symlinks or "..".
func (r *Root) policyFileLoader(pid int) func(path string) ([]byte, error) {
	return func(path string) ([]byte, error) {
		root, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("load policy %s: root of pid %d: %w", path, pid, err)
		}
		defer unix.Close(root)
		fd, err := unix.Openat2(root, path, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return nil, fmt.Errorf("load policy %s: %w", path, err)
		}
		f := os.NewFile(uintptr(fd), path)
		defer f.Close()
		if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("load policy %s: not a regular file: %w", path, syscall.EINVAL)
		}
		data, err := io.ReadAll(io.LimitReader(f, maxPolicyFile+1))
		if err != nil {
			return nil, fmt.Errorf("load policy %s: %w", path, err)
		}
		if len(data) > maxPolicyFile {
			return nil, fmt.Errorf("load policy %s: larger than %d bytes: %w", path, maxPolicyFile, syscall.EFBIG)
		}
		return data, nil
	}
}

// newWriteSession starts a kernel-style policy write session for ns.
func (r *Root) newWriteSession(ns *imans.Namespace, pid int) writeSession {
	return &policy.Session{
		Options:  policy.ParseOptions{DefaultPolicyActive: ns.DefaultPolicyActive()},
		ReadFile: r.policyFileLoader(pid),
	}
}
