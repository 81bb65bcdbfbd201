package nsresolve

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Pinned holds the namespaces of a process open (a pidfd and one nsfs fd
// per namespace) so their inode numbers can't be reused while it is held.
// Its methods are safe for concurrent use; an fd number obtained from PidFD
// or NSFD is only valid until Close.
type Pinned struct {
	PidNS, UserNS, MntNS, CgroupNS NSID

	Pid   int // host pid the namespaces were pinned from
	mu    sync.Mutex
	open  bool // made by Pin and not closed yet (the zero Pinned holds nothing)
	pidfd int
	fds   map[string]int // "pid", "user", "mnt", "cgroup" → nsfs fd
}

// pinnedKinds are the namespace links Pin opens, in order.
var pinnedKinds = []string{"pid", "user", "mnt", "cgroup"}

// Pin opens and holds the namespaces of process pid (pidfd + ns fds).
//
// The pidfd is opened first. The ns links are then opened by path, and the
// pidfd is signalled (signal 0) afterwards: if the process is still alive
// then, the pid could not have been reused in between, so the namespaces
// opened are really its own.
func Pin(pid int) (*Pinned, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pin namespaces of pid %d: invalid pid", pid)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pin namespaces of pid %d: pidfd_open: %w", pid, err)
	}
	p := &Pinned{Pid: pid, open: true, pidfd: pidfd, fds: map[string]int{}}
	for _, kind := range pinnedKinds {
		path := "/proc/" + strconv.Itoa(pid) + "/ns/" + kind
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("pin namespaces of pid %d: open %s: %w", pid, path, err)
		}
		p.fds[kind] = fd
		id, err := fstatNS(fd)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("pin namespaces of pid %d: %s: %w", pid, path, err)
		}
		switch kind {
		case "pid":
			p.PidNS = id
		case "user":
			p.UserNS = id
		case "mnt":
			p.MntNS = id
		case "cgroup":
			p.CgroupNS = id
		}
	}
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		p.Close()
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("pin namespaces of pid %d: %w (%w)", pid, ErrGone, err)
		}
		return nil, fmt.Errorf("pin namespaces of pid %d: pidfd_send_signal 0: %w", pid, err)
	}
	return p, nil
}

// Close releases the pidfd and namespace fds. It is safe to call twice.
func (p *Pinned) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.open {
		return nil
	}
	p.open = false
	var errs []error
	for kind, fd := range p.fds {
		if err := unix.Close(fd); err != nil {
			errs = append(errs, fmt.Errorf("close ns/%s fd: %w", kind, err))
		}
		delete(p.fds, kind)
	}
	if err := unix.Close(p.pidfd); err != nil {
		errs = append(errs, fmt.Errorf("close pidfd: %w", err))
	}
	p.pidfd = -1
	return errors.Join(errs...)
}

// Alive reports whether the pinned process (the container's init) is still
// running: a pidfd polls readable once the process has exited.
func (p *Pinned) Alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.open {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n == 0
	}
}

// PidFD returns the pidfd of the pinned process (-1 after Close). It stays
// owned by p; poll it for POLLIN to learn when the process exits.
func (p *Pinned) PidFD() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.open {
		return -1
	}
	return p.pidfd
}

// NSFD returns the pinned nsfs fd of kind "pid", "user", "mnt" or "cgroup"
// (-1 if unknown or closed). It stays owned by p; use it for setns(2).
func (p *Pinned) NSFD(kind string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fd, ok := p.fds[kind]; ok && p.open {
		return fd
	}
	return -1
}
