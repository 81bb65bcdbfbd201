package nsresolve

import "errors"

// NSID identifies a namespace by its nsfs device and inode.
type NSID struct {
	Dev uint64
	Ino uint64
}

// Caller is what a FUSE request's (or fanotify event's) pid resolves to.
type Caller struct {
	TID, PID             int    // thread id as in the request, and its thread group id (host pid ns)
	PidNS                NSID   // the caller's own pid namespace
	UserNS               NSID   // the caller's user namespace
	MntNS                NSID   // the caller's mount namespace
	UID, EUID, GID, EGID uint32 // host (initial user ns) ids from /proc/TID/status
	CapEff               uint64
}

// Resolver resolves callers and caches pid-namespace ancestry.
type Resolver struct{}

var errNotImplemented = errors.New("nsresolve: not implemented yet")

// NewResolver returns a Resolver with an empty cache.
func NewResolver() *Resolver { return &Resolver{} }

// Caller resolves the thread id tid (as seen from the host pid namespace).
func (r *Resolver) Caller(tid int) (*Caller, error) { return nil, errNotImplemented }

// Owner walks from c.PidNS up the pid-namespace ancestry and returns the first
// namespace for which registered() is true; ok=false means the host.
func (r *Resolver) Owner(c *Caller, registered func(NSID) bool) (NSID, bool, error) {
	return NSID{}, false, errNotImplemented
}

// Privileged reports whether c is root with CAP_SYS_ADMIN in userNS.
func (r *Resolver) Privileged(c *Caller, userNS NSID) (bool, error) { return false, errNotImplemented }

// Pinned holds the namespaces of a process open so their inode numbers can't be reused.
type Pinned struct {
	PidNS, UserNS, MntNS, CgroupNS NSID
}

// Pin opens and holds the namespaces of process pid (pidfd + ns fds).
func Pin(pid int) (*Pinned, error) { return nil, errNotImplemented }

// Close releases the pidfd and namespace fds.
func (p *Pinned) Close() error { return nil }

// Alive reports whether the pinned process is still running.
func (p *Pinned) Alive() bool { return false }

// PidFD returns the pidfd of the pinned process.
func (p *Pinned) PidFD() int { return -1 }
