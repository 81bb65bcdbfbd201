package fs

import (
	"context"
	"os"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
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

// Getattr implements fs.NodeGetattrer. The size is the caller's policy
// text's, cached per load (never rendered per stat).
func (n *policyNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.root.setAttr(&out.Attr, syscall.S_IFREG|modePolicy)
	out.Size = n.root.sizeFor(ctx, func(ns *imans.Namespace) int64 {
		writers.wait(ns, closingDirty)
		return int64(len(ns.PolicyText()))
	})
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
// EACCES, reading needs privilege, one writer per namespace (EBUSY). Both
// first wait for the RELEASE of a writer that was just closed (see
// settleTimeout).
func (n *policyNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		_, ns, errno := n.root.authorize(ctx, "read policy")
		if errno != 0 {
			return nil, 0, errno
		}
		writers.wait(ns, closingDirty)
		return &policyReader{text: ns.PolicyText()}, readOnlyOpenFlags, 0
	case syscall.O_WRONLY:
		return n.openWriter(ctx, flags)
	default:
		return nil, 0, syscall.EACCES
	}
}

func (n *policyNode) openWriter(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	c, ns, errno := n.root.authorize(ctx, "write policy")
	if errno != 0 {
		return nil, 0, errno
	}
	writers.wait(ns, closing)
	if !ns.AcquirePolicyWriter() {
		return nil, 0, syscall.EBUSY
	}
	root, err := pinRoot(c)
	if err != nil {
		ns.ReleasePolicyWriter()
		n.root.log.WithError(err).WithFields(logrus.Fields{"ns": ns.ID, "pid": c.PID}).Debug("policy writer gone at open")
		return nil, 0, errnoOf(err)
	}
	w := &policyWriter{root: n.root, ns: ns, pid: c.PID, rootDir: root, appendMode: flags&syscall.O_APPEND != 0}
	w.sess = newWriteSession(ns, root)
	writers.set(w, writerState{}, true)
	return w, fuse.FOPEN_DIRECT_IO, 0
}

// policyReader serves the canonical policy text as it was at open.
type policyReader struct {
	text string
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

// policyWriter is one open file's policy update session.
//
// Kernel semantics map onto FUSE like this. The kernel never advances the
// file position of the policy file, FUSE does (by each write's result): a
// write at the position the earlier writes on this handle reached is the
// kernel's "*ppos == 0"; any other offset is EINVAL. With O_APPEND FUSE
// sends every write at the file's size; the kernel's position stays 0, so
// every write of an O_APPEND handle is at position 0. What was written is
// applied all or nothing at RELEASE, the last close of the open file (a
// child's exit or a shell's dup'd fd only FLUSHes); the handle holds the
// namespace's writer claim from OPEN to RELEASE, like IMA_FS_BUSY. "/path"
// loads resolve in the opener's root, pinned at OPEN (rootDir).
type policyWriter struct {
	root       *Root
	ns         *imans.Namespace
	pid        int
	rootDir    *os.File // the opener's root directory (O_PATH)
	appendMode bool     // opened O_APPEND

	mu    sync.Mutex
	sess  writeSession
	pos   int64 // file position FUSE has reached on this handle
	dirty bool  // written since open
	done  bool  // released
}

// Write implements fs.FileWriter.
func (w *policyWriter) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return 0, syscall.EBADF
	}
	if err := w.ns.StorageError(); err != nil {
		// The load could not be saved: refuse it now, not at close.
		return 0, errnoOfPolicy(err)
	}
	sessOff := off
	if w.appendMode || off == w.pos {
		sessOff = 0
	}
	w.dirty = true
	writers.set(w, writerState{dirty: true}, true)
	n, err := w.sess.Write(data, sessOff)
	if err != nil {
		// err never holds a loaded file's content (policy.Session).
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

// Flush implements fs.FileFlusher: one close(2) of a descriptor of the
// open file, maybe not the last; the session stays open until RELEASE.
func (w *policyWriter) Flush(ctx context.Context) syscall.Errno {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		writers.set(w, writerState{closing: true, dirty: w.dirty}, true)
	}
	return 0
}

// Release implements fs.FileReleaser: the last close of the open file
// applies the session (ima_release_policy) and gives the claim back.
func (w *policyWriter) Release(ctx context.Context) syscall.Errno {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return 0
	}
	w.done = true
	if w.dirty {
		log := w.root.log.WithFields(logrus.Fields{"ns": w.ns.ID, "pid": w.pid})
		rules, err := w.sess.Commit()
		if err == nil {
			err = w.ns.LoadPolicy(rules)
		}
		if err != nil {
			log.WithError(err).Info("policy update failed")
		} else {
			log.WithField("rules", len(rules)).Info("policy update completed")
		}
	}
	w.sess = nil
	w.rootDir.Close()
	w.ns.ReleasePolicyWriter()
	writers.set(w, writerState{}, false)
	return 0
}
