package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/nsresolve"
)

// ListReadRule says who may read the lists and counters of a view.
type ListReadRule int

const (
	// ListReadRoot is the kernel's rule: the files are 0440 root:root, so
	// uid 0 of the view reads them by DAC, with no capability.
	ListReadRoot ListReadRule = iota
	// ListReadSysAdmin also asks CAP_SYS_ADMIN in the view's user
	// namespace (imafs's rule before issue 11; `serve --list-read-cap
	// sys_admin`).
	ListReadSysAdmin
)

// ParseListReadCap parses `serve --list-read-cap`: "none" (or "") is
// ListReadRoot, "sys_admin" (or "cap_sys_admin", any case) ListReadSysAdmin.
func ParseListReadCap(s string) (ListReadRule, error) {
	switch strings.ToLower(s) {
	case "", "none":
		return ListReadRoot, nil
	case "sys_admin", "cap_sys_admin":
		return ListReadSysAdmin, nil
	}
	return 0, fmt.Errorf("list read capability %q: want none or sys_admin", s)
}

// errnoOf maps a caller-resolution error to the request's errno: EACCES
// (a caller that exited meanwhile, or one we can't vouch for, is refused),
// except ENOMEM, which is passed on.
func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno == syscall.ENOMEM {
		return errno
	}
	return syscall.EACCES
}

// truncateOnly checks a SETATTR on a write-only control file (policy,
// quote): only the truncation to 0 that a shell's `>` redirection (O_TRUNC)
// sends is accepted, and only from a caller allowed to open the file; it
// changes nothing. Any other size is EPERM, like every change of the tree.
func (r *Root) truncateOnly(ctx context.Context, in *fuse.SetAttrIn, op string) syscall.Errno {
	const harmless = fuse.FATTR_SIZE | fuse.FATTR_FH | fuse.FATTR_LOCKOWNER |
		fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW | fuse.FATTR_CTIME
	if in.Valid&^uint32(harmless) != 0 {
		return syscall.EPERM
	}
	if _, _, errno := r.authorize(ctx, op); errno != 0 {
		return errno
	}
	if sz, ok := in.GetSize(); ok && sz != 0 {
		return syscall.EPERM // the tree is immutable (see immutable.go)
	}
	return 0
}

// resolve returns the caller of the request in ctx and the imafs namespace
// that answers for it. The caller's CapEff and MntNS are filled only when
// want asks for them; its ids are the request's (fsuid and fsgid: what the
// kernel checks a file's mode against), nsresolve.CallerOfRequest.
func (r *Root) resolve(ctx context.Context, want nsresolve.Want) (*nsresolve.Caller, *imans.Namespace, syscall.Errno) {
	fc, ok := fuse.FromContext(ctx)
	if !ok || fc.Pid == 0 {
		// No pid: the kernel made the request for no task we can judge.
		return nil, nil, syscall.EACCES
	}
	c, err := r.reg.Resolver().CallerOfRequest(int(fc.Pid), nsresolve.Ids{UID: fc.Uid, GID: fc.Gid}, want)
	if err != nil {
		r.log.WithError(err).WithField("tid", fc.Pid).Debug("resolve caller")
		return nil, nil, errnoOf(err)
	}
	ns, err := r.reg.ForCaller(c)
	if err != nil {
		r.log.WithError(err).WithField("pid", c.PID).Debug("namespace for caller")
		return nil, nil, errnoOf(err)
	}
	if ns.IsHost() && r.opts.Owner != nil && c.PidNS != r.reg.Resolver().HostPidNS() {
		r.log.WithFields(logrus.Fields{"pid": c.PID, "mount": r.opts.Owner.ID}).Debug("container caller without a registered namespace")
		return nil, nil, syscall.EACCES
	}
	return c, ns, 0
}

// authorize resolves the caller and checks it may use the control files of
// its namespace (policy, quote): uid 0 with CAP_SYS_ADMIN in the user
// namespace that owns the container (the initial user namespace for the
// host view).
// The caller comes with every field (CapEff for the check, MntNS for a
// policy write's pinRoot).
func (r *Root) authorize(ctx context.Context, op string) (*nsresolve.Caller, *imans.Namespace, syscall.Errno) {
	return r.check(ctx, op, nsresolve.WantAll, r.reg.Resolver().Privileged)
}

// authorizeRead resolves the caller and checks it may read the lists and
// counters of its namespace. The kernel's rule (ListReadRoot, the default)
// is DAC on a 0440 root:root file: uid 0 of the view, no capability; the
// stricter ListReadSysAdmin also asks CAP_SYS_ADMIN there.
func (r *Root) authorizeRead(ctx context.Context, op string) (*nsresolve.Caller, *imans.Namespace, syscall.Errno) {
	if r.opts.ListRead == ListReadSysAdmin {
		return r.authorize(ctx, op)
	}
	return r.check(ctx, op, 0, r.reg.Resolver().RootIn)
}

// viewUserNS is the user namespace whose uid 0 owns ns's tree.
func (r *Root) viewUserNS(ns *imans.Namespace) nsresolve.NSID {
	if ns.IsHost() {
		return r.reg.Resolver().HostUserNS()
	}
	return ns.Pinned.UserNS
}

// check resolves the caller (with the fields want names) and asks allowed
// whether it may do op in the user namespace that owns its view.
func (r *Root) check(ctx context.Context, op string, want nsresolve.Want, allowed func(*nsresolve.Caller, nsresolve.NSID) (bool, error)) (*nsresolve.Caller, *imans.Namespace, syscall.Errno) {
	c, ns, errno := r.resolve(ctx, want)
	if errno != 0 {
		return nil, nil, errno
	}
	ok, err := allowed(c, r.viewUserNS(ns))
	if err != nil {
		r.log.WithError(err).WithFields(logrus.Fields{"pid": c.PID, "ns": ns.ID}).Debug("privilege check")
		return nil, nil, syscall.EACCES
	}
	if !ok {
		r.log.WithFields(logrus.Fields{"op": op, "pid": c.PID, "euid": c.EUID, "ns": ns.ID}).Debug("denied")
		return nil, nil, syscall.EACCES
	}
	return c, ns, 0
}

// rootOfView reports whether the caller of ctx is uid 0 of its view (the
// owner of every entry of the tree, as root is of securityfs's); the caller
// and namespace are nil when it can't be resolved.
func (r *Root) rootOfView(ctx context.Context) (*nsresolve.Caller, *imans.Namespace, bool) {
	c, ns, errno := r.resolve(ctx, 0)
	if errno != 0 {
		return nil, nil, false
	}
	ok, err := r.reg.Resolver().RootIn(c, r.viewUserNS(ns))
	return c, ns, err == nil && ok
}

// unknownSize is the size reported when the caller's content size is not
// known (a caller that may not read it, or no caller).
const unknownSize = 4096

// sizeFor returns the size a content file reports to the caller of ctx: the
// size of the caller's own content when it may read it. Like every
// attribute it is never cached (attribute timeout 0). It is what keeps
// sendfile(2) working: the kernel splices FUSE files through the page cache
// up to i_size, so a size of 0 would read as empty instead of failing over to
// read(2) (see rawFS).
func (r *Root) sizeFor(ctx context.Context, size func(*imans.Namespace) int64) uint64 {
	return r.sizeIf(ctx, r.authorize, size)
}

// listSizeFor is sizeFor for the lists and counters (their read rule).
func (r *Root) listSizeFor(ctx context.Context, size func(*imans.Namespace) int64) uint64 {
	return r.sizeIf(ctx, r.authorizeRead, size)
}

func (r *Root) sizeIf(ctx context.Context, auth func(context.Context, string) (*nsresolve.Caller, *imans.Namespace, syscall.Errno), size func(*imans.Namespace) int64) uint64 {
	_, ns, errno := auth(ctx, "getattr")
	if errno != 0 {
		return unknownSize
	}
	if n := size(ns); n > 0 {
		return uint64(n)
	}
	// Empty content (a policy with no rules): still not 0, so that a
	// sendfile after another caller's content grows does not stop at a
	// stale i_size of 0.
	return unknownSize
}
