package fs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

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

// lineSession is ima_write_policy + ima_parse_add_rule on top of
// policy.ParseRule: at most PAGE_SIZE-1 bytes taken per write, EINVAL at a
// non-zero offset, one line parsed per write (result: its length + 1), "/path"
// loads a file; any error fails the whole session.
type lineSession struct {
	load   func(path string) ([]byte, error)
	rules  policy.Policy
	failed bool
}

const pageSize = 4096

func (s *lineSession) Write(p []byte, off int64) (int, error) {
	if len(p) >= pageSize {
		p = p[:pageSize-1]
	}
	if off != 0 {
		s.failed = true
		return 0, fmt.Errorf("policy write at offset %d: %w", off, syscall.EINVAL)
	}
	if i := bytes.IndexByte(p, 0); i >= 0 {
		p = p[:i]
	}
	if len(p) > 0 && p[0] == '/' {
		path := string(bytes.TrimRight(p, "\n"))
		data, err := s.load(path)
		if err != nil {
			s.failed = true
			return 0, err
		}
		rules, err := policy.Parse(string(data))
		if err != nil {
			s.failed = true
			return 0, fmt.Errorf("policy file %s: %w: %w", path, err, syscall.EINVAL)
		}
		s.rules = append(s.rules, rules...)
		return len(p), nil
	}
	line := p
	if i := bytes.IndexByte(p, '\n'); i >= 0 {
		line = p[:i]
	}
	n := len(line) + 1
	r, err := policy.ParseRule(string(line))
	if err != nil {
		s.failed = true
		return 0, fmt.Errorf("policy rule %q: %w: %w", line, err, syscall.EINVAL)
	}
	if r != nil {
		s.rules = append(s.rules, r)
	}
	return n, nil
}

func (s *lineSession) Commit() (policy.Policy, error) {
	if s.failed {
		return nil, fmt.Errorf("policy session had an invalid write")
	}
	return s.rules, nil
}

// newWriteSession starts a policy write session.
var newWriteSession = func(load func(path string) ([]byte, error)) writeSession {
	return &lineSession{load: load}
}
