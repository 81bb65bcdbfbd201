package fs

import (
	"context"
	"errors"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/policy"
)

var (
	_ gofs.NodeOpener    = (*policyNode)(nil)
	_ gofs.NodeGetattrer = (*policyNode)(nil)
	_ gofs.NodeSetattrer = (*policyNode)(nil)
	_ gofs.FileReader    = (*policyReader)(nil)
	_ gofs.FileWriter    = (*policyWriter)(nil)
	_ gofs.FileFlusher   = (*policyWriter)(nil)
	_ gofs.FileReleaser  = (*policyWriter)(nil)
)

// policyNode is the policy file.
type policyNode struct {
	gofs.Inode
	root *Root
}

// Getattr implements fs.NodeGetattrer.
func (n *policyNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.root.setAttr(&out.Attr, syscall.S_IFREG|modePolicy)
	out.Size = n.root.sizeFor(ctx, func(ns *imans.Namespace) int64 { return int64(len(ns.Policy().String())) })
	return 0
}

// Setattr implements fs.NodeSetattrer. Only truncation to 0 is accepted:
// that is the SETATTR a shell's `> policy` (O_TRUNC) sends, and the file is
// always empty for a writer anyway.
func (n *policyNode) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := n.root.truncateOnly(ctx, in, "truncate policy"); errno != 0 {
		return errno
	}
	return n.Getattr(ctx, fh, out)
}

// Open implements fs.NodeOpener with ima_open_policy's rules: O_RDWR is
// EACCES, reading needs privilege, one writer per namespace (EBUSY).
func (n *policyNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		_, ns, errno := n.root.authorize(ctx, "read policy")
		if errno != 0 {
			return nil, 0, errno
		}
		return &policyReader{text: []byte(ns.Policy().String())}, readOnlyOpenFlags, 0
	case syscall.O_WRONLY:
		c, ns, errno := n.root.authorize(ctx, "write policy")
		if errno != 0 {
			return nil, 0, errno
		}
		if !ns.AcquirePolicyWriter() {
			return nil, 0, syscall.EBUSY
		}
		w := &policyWriter{root: n.root, ns: ns, pid: c.PID, holding: true}
		w.sess = n.root.newWriteSession(ns, c.PID)
		return w, fuse.FOPEN_DIRECT_IO, 0
	default:
		return nil, 0, syscall.EACCES
	}
}

// policyReader serves the canonical policy text as it was at open.
type policyReader struct {
	text []byte
}

// Read implements fs.FileReader.
func (h *policyReader) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(len(h.text)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, h.text[off:])
	return fuse.ReadResultData(dest[:n]), 0
}

// policyWriter is one writer's policy update session.
//
// Kernel semantics map onto FUSE like this. The kernel never advances the
// file position of the policy file, FUSE does (by each write's result): a
// write at the position the earlier writes on this handle reached is the
// kernel's "*ppos == 0"; any other offset is EINVAL. What was written is
// applied at FLUSH (synchronous with close(2)); a shell's `> policy` closes
// a dup of the fd before writing, so a FLUSH also hands the writer claim back
// and the next write on the handle claims it again (EBUSY if another writer
// took it meanwhile). RELEASE repeats the FLUSH work when there is any left.
type policyWriter struct {
	root *Root
	ns   *imans.Namespace
	pid  int

	mu      sync.Mutex
	sess    writeSession
	pos     int64 // file position FUSE has reached on this handle
	dirty   bool  // written since the last commit
	holding bool  // holds ns's writer claim
}

// Write implements fs.FileWriter.
func (w *policyWriter) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.holding {
		if !w.ns.AcquirePolicyWriter() {
			return 0, syscall.EBUSY
		}
		w.holding = true
	}
	if err := w.ns.StorageError(); err != nil {
		// The load could not be saved: refuse it now, not at close.
		return 0, errnoOfPolicy(err)
	}
	sessOff := off
	if off == w.pos {
		sessOff = 0
	}
	w.dirty = true
	n, err := w.sess.Write(data, sessOff)
	if err != nil {
		w.root.log.WithError(err).WithFields(logrus.Fields{"ns": w.ns.ID, "pid": w.pid}).Info("policy write rejected")
		return 0, errnoOfPolicy(err)
	}
	// The kernel counts a missing final newline (count+1); FUSE refuses a
	// result larger than the request (EIO).
	if n > len(data) {
		n = len(data)
	}
	w.pos = off + int64(n)
	return uint32(n), 0
}

// Flush implements fs.FileFlusher: apply what this handle has written. A
// load that cannot be made durable (the state directory's errno, e.g.
// ENOSPC) changes nothing and is close(2)'s error.
func (w *policyWriter) Flush(ctx context.Context) syscall.Errno {
	return w.commit()
}

// Release implements fs.FileReleaser.
func (w *policyWriter) Release(ctx context.Context) syscall.Errno {
	w.commit()
	return 0
}

// errnoOfPolicy maps a policy.Session error to the kernel's errno.
func errnoOfPolicy(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case errors.Is(err, policy.ErrAccess):
		return syscall.EACCES
	case errors.Is(err, policy.ErrInvalid):
		return syscall.EINVAL
	case errors.As(err, &errno):
		return errno
	}
	// A policy file that can't be read: the kernel returns the read error;
	// anything else is a bad request.
	return syscall.EINVAL
}

func (w *policyWriter) commit() (errno syscall.Errno) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.holding {
		return 0
	}
	log := w.root.log.WithFields(logrus.Fields{"ns": w.ns.ID, "pid": w.pid})
	if w.dirty {
		rules, err := w.sess.Commit()
		if err == nil {
			err = w.ns.LoadPolicy(rules)
		}
		var storage syscall.Errno
		if errors.Is(err, imans.ErrStorage) && errors.As(err, &storage) {
			errno = storage // not saved, so not applied: the state directory's errno
		}
		if err != nil {
			log.WithError(err).Info("policy update failed")
		} else {
			log.WithField("rules", len(rules)).Info("policy update completed")
		}
		w.sess = w.root.newWriteSession(w.ns, w.pid)
		w.dirty = false
	}
	w.ns.ReleasePolicyWriter()
	w.holding = false
	return errno
}
