package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/nsresolve"
)

// errnoOf maps resolution errors: a caller that exited meanwhile gets
// ESRCH-free EACCES like any caller we can't vouch for.
func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno == syscall.ENOMEM {
		return errno
	}
	return syscall.EACCES
}

// resolve returns the caller of the request in ctx and the imafs namespace
// that answers for it.
func (r *Root) resolve(ctx context.Context) (*nsresolve.Caller, *imans.Namespace, syscall.Errno) {
	fc, ok := fuse.FromContext(ctx)
	if !ok || fc.Pid == 0 {
		// No pid: the kernel made the request for no task we can judge.
		return nil, nil, syscall.EACCES
	}
	c, err := r.reg.Resolver().Caller(int(fc.Pid))
	if err != nil {
		r.log.WithError(err).WithField("tid", fc.Pid).Debug("resolve caller")
		return nil, nil, errnoOf(err)
	}
	ns, err := r.reg.ForCaller(c)
	if err != nil {
		r.log.WithError(err).WithField("pid", c.PID).Debug("namespace for caller")
		return nil, nil, errnoOf(err)
	}
	return c, ns, 0
}

// authorize resolves the caller and checks it may use the files of its
// namespace: uid 0 with CAP_SYS_ADMIN in the user namespace that owns the
// container (the initial user namespace for the host view).
func (r *Root) authorize(ctx context.Context, op string) (*nsresolve.Caller, *imans.Namespace, syscall.Errno) {
	c, ns, errno := r.resolve(ctx)
	if errno != 0 {
		return nil, nil, errno
	}
	userNS := r.reg.Resolver().HostUserNS()
	if !ns.IsHost() {
		userNS = ns.Pinned.UserNS
	}
	ok, err := r.reg.Resolver().Privileged(c, userNS)
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
