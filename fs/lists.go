package fs

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
)

var (
	_ gofs.NodeAccesser  = (*listNode)(nil)
	_ gofs.NodeAccesser  = (*counterNode)(nil)
	_ gofs.NodeOpener    = (*listNode)(nil)
	_ gofs.NodeGetattrer = (*listNode)(nil)
	_ gofs.FileReader    = (*listHandle)(nil)
	_ gofs.NodeOpener    = (*counterNode)(nil)
	_ gofs.NodeGetattrer = (*counterNode)(nil)
	_ gofs.FileReader    = (*counterHandle)(nil)
)

// readOnlyOpenFlags answer the open of a read-only handle: direct I/O (no
// caller's content in the page cache) and no FLUSH at close (nothing to
// flush: one round trip less per open+read+close).
const readOnlyOpenFlags = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH

// listNode is a measurement list file in one rendering and bank.
type listNode struct {
	gofs.Inode
	frozenFile
	format measurelog.Format
	bank   measurelog.Algo
}

// listHandle is an open list: the namespace is bound at open.
type listHandle struct {
	fair   *Fairness
	ns     *imans.Namespace
	format measurelog.Format
	bank   measurelog.Algo
}

// Getattr implements fs.NodeGetattrer.
func (n *listNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.root.setAttr(&out.Attr, syscall.S_IFREG|modeList)
	out.Size = n.root.listSizeFor(ctx, func(ns *imans.Namespace) int64 { return ns.List.Size(n.format, n.bank) })
	return 0
}

// openReadOnly is the open rule of the 0440 files: read-only, by their
// read rule (authorizeRead).
func (r *Root) openReadOnly(ctx context.Context, flags uint32, op string) (*imans.Namespace, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, syscall.EACCES
	}
	_, ns, errno := r.authorizeRead(ctx, op)
	return ns, errno
}

// Access implements fs.NodeAccesser.
func (n *listNode) Access(ctx context.Context, mask uint32) syscall.Errno {
	return n.root.accessReadOnly(ctx, mask)
}

// accessReadOnly answers access(2) on a 0440 file as its open would: R_OK
// by the read rule (go-fuse's default would compare the caller's host uid
// with the file's owner, which container root in a user namespace is not),
// W_OK and X_OK never.
func (r *Root) accessReadOnly(ctx context.Context, mask uint32) syscall.Errno {
	if mask&(unix.W_OK|unix.X_OK) != 0 {
		return syscall.EACCES
	}
	if mask&unix.R_OK == 0 {
		return 0
	}
	_, _, errno := r.authorizeRead(ctx, "access")
	return errno
}

// Open implements fs.NodeOpener.
func (n *listNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ns, errno := n.root.openReadOnly(ctx, flags, "open list")
	if errno != 0 {
		return nil, 0, errno
	}
	return &listHandle{fair: n.root.opts.Fair, ns: ns, format: n.format, bank: n.bank}, readOnlyOpenFlags, 0
}

// Read implements fs.FileReader: the bytes at off of the list's rendering,
// which never change once written (offset-stable, like the kernel's seq_file).
// It waits for a read slot of the namespace (Fairness).
func (h *listHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	done, errno := h.fair.acquire(ctx, h.ns)
	if errno != 0 {
		return nil, errno
	}
	defer done()
	n, err := h.render(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// splitPart is the smallest part of a READ rendered by a goroutine of its
// own.
const splitPart = 128 << 10

// render renders the list's bytes at off into dest (List.ReadAt: the reply
// buffer itself, no copy). A large READ is cut into parts of at least
// splitPart, one per CPU, rendered at once, each at its own offset (the
// rendering is a pure function of the offset), unless another namespace
// is being read (Fairness.alone): then one CPU is all a namespace gets.
// The bytes are those one ReadAt would give: a part that ends short (the
// end of the list) ends the read there, whatever later parts found.
func (h *listHandle) render(dest []byte, off int64) (int, error) {
	parts := min(runtime.GOMAXPROCS(0), len(dest)/splitPart)
	if parts < 2 || !h.fair.alone(h.ns) {
		return h.ns.List.ReadAt(dest, off, h.format, h.bank)
	}
	size := (len(dest) + parts - 1) / parts
	n := make([]int, parts)
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for i := 1; i < parts; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lo, hi := i*size, min((i+1)*size, len(dest))
			n[i], errs[i] = h.ns.List.ReadAt(dest[lo:hi], off+int64(lo), h.format, h.bank)
		}()
	}
	n[0], errs[0] = h.ns.List.ReadAt(dest[:size], off, h.format, h.bank)
	wg.Wait()
	total := 0
	for i := range parts {
		total += n[i]
		if errs[i] != nil || n[i] < min((i+1)*size, len(dest))-i*size {
			return total, errs[i] // a short part ends the read: no gap
		}
	}
	return total, nil
}

// counterNode is runtime_measurements_count or violations.
type counterNode struct {
	gofs.Inode
	frozenFile
	value func(*imans.Namespace) int64
}

type counterHandle struct {
	ns    *imans.Namespace
	value func(*imans.Namespace) int64
}

// Getattr implements fs.NodeGetattrer.
func (n *counterNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.root.setAttr(&out.Attr, syscall.S_IFREG|modeList)
	out.Size = n.root.listSizeFor(ctx, func(ns *imans.Namespace) int64 { return int64(len(formatCounter(nil, n.value(ns)))) })
	return 0
}

// Access implements fs.NodeAccesser.
func (n *counterNode) Access(ctx context.Context, mask uint32) syscall.Errno {
	return n.root.accessReadOnly(ctx, mask)
}

// Open implements fs.NodeOpener.
func (n *counterNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ns, errno := n.root.openReadOnly(ctx, flags, "open counter")
	if errno != 0 {
		return nil, 0, errno
	}
	return &counterHandle{ns: ns, value: n.value}, readOnlyOpenFlags, 0
}

// Read implements fs.FileReader: "%li\n" of the current value, read at off
// (simple_read_from_buffer semantics).
func (h *counterHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	var buf [24]byte
	text := formatCounter(buf[:0], h.value(h.ns))
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(len(text)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, text[off:])
	return fuse.ReadResultData(dest[:n]), 0
}

// formatCounter appends the kernel's "%li\n" of v.
func formatCounter(dst []byte, v int64) []byte {
	return append(strconv.AppendInt(dst, v, 10), '\n')
}
