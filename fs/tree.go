package fs

import (
	"context"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
)

// Kernel modes of the securityfs entries (security/inode.c, ima_fs.c).
const (
	modeDir     = 0o755
	modeList    = 0o440
	modePolicy  = 0o600 // CONFIG_IMA_READ_POLICY
	modeSymlink = 0o444
)

// DefaultCacheTimeout is how long the kernel may cache entries: the tree is
// the same for every caller. Attributes are never cached: a file's size is
// the caller's (see sizeFor).
const DefaultCacheTimeout = time.Second

// Options configure a tree.
type Options struct {
	Registry *imans.Registry
	Log      *logrus.Logger
	// Owner is the container this tree is mounted for (nil: the host's
	// mount). On a container's mount only host processes (initial pid
	// namespace, e.g. through /proc/PID/root) may get the host view: a
	// caller of a detached container (an fd still open after the lazy
	// unmount) resolves to the host and is refused instead.
	Owner *imans.Namespace
	// Quoter answers integrity/ima/quote (nil: no vTPM, the file is there
	// and answers ENODEV).
	Quoter Quoter
	// CacheTimeout is the entry timeout (DefaultCacheTimeout when zero;
	// negative means no caching).
	CacheTimeout time.Duration
	// ListRead is who may read the lists and counters (ListReadRoot, the
	// kernel's rule, when zero).
	ListRead ListReadRule
	// Fair bounds the list reads served at once per namespace (nil: the
	// process-wide DefaultFairness).
	Fair *Fairness
	// MaxRead is the largest READ (and WRITE) the kernel sends, in bytes
	// (0: HostMaxRead for the host's tree, Owner nil; DefaultMaxRead for a
	// container's). It is also the files' st_blksize, so that `cat` asks
	// for that much at a time.
	MaxRead int
}

// DefaultMaxRead is a container tree's largest READ: go-fuse's default,
// 128 KiB. A container's connection (mountns.Conn) takes buffers of this
// size from a pool shared by all connections only while it answers a
// request, so the size costs memory per request in flight, not per mount.
const DefaultMaxRead = 128 << 10

// HostMaxRead is the host tree's largest READ: 1 MiB, the kernel's limit
// (256 pages, FUSE_MAX_MAX_PAGES; fs.fuse.max_pages_limit). One tree pays
// for the buffers, and a `cat` of a million-entry list takes 160 round
// trips instead of 1,300 (docs/benchmarks.md).
const HostMaxRead = 1 << 20

// Root is the root of the tree (what is mounted at /sys/kernel/security).
type Root struct {
	gofs.Inode
	frozenDir // every change of the tree is refused (immutable.go)
	opts      Options
	log       *logrus.Logger
	reg       *imans.Registry
	mtime     time.Time

	handles  atomic.Int64 // open file and directory handles (rawFS counts them)
	lastOpen atomic.Int64 // unix ns of the last LOOKUP, OPEN or OPENDIR received (rawFS)
}

var (
	_ gofs.NodeOnAdder    = (*Root)(nil)
	_ gofs.NodeGetattrer  = (*Root)(nil)
	_ gofs.NodeStatfser   = (*Root)(nil)
	_ gofs.NodeGetattrer  = (*dirNode)(nil)
	_ gofs.NodeGetattrer  = (*symlinkNode)(nil)
	_ gofs.NodeReadlinker = (*symlinkNode)(nil)
)

// NewRoot returns the root of a tree answering from opts.Registry.
func NewRoot(opts Options) *Root {
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	if opts.Fair == nil {
		opts.Fair = DefaultFairness
	}
	if opts.MaxRead <= 0 {
		opts.MaxRead = DefaultMaxRead
		if opts.Owner == nil {
			opts.MaxRead = HostMaxRead
		}
	}
	r := &Root{opts: opts, log: opts.Log, reg: opts.Registry, mtime: time.Now()}
	r.frozenDir = newFrozenDir(r)
	return r
}

// MountOptions returns the go-fuse options to serve r with: entry and
// attribute caching (the tree is the same for every caller), AllowOther
// (container root is another host uid), our own permission checks, READs
// of up to Options.MaxRead (go-fuse's MaxWrite sets the connection's
// max_pages, and max_read where go-fuse mounts), and no splice: every READ
// is answered from a buffer, which go-fuse's splice path would first try
// to stage through a pipe (two system calls more per READ).
func (r *Root) MountOptions() *gofs.Options {
	t := r.opts.CacheTimeout
	if t == 0 {
		t = DefaultCacheTimeout
	}
	if t < 0 {
		t = 0
	}
	neg := t
	var attr time.Duration
	return &gofs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:    true,
			FsName:        "imafs",
			Name:          "imafs",
			MaxWrite:      r.opts.MaxRead,
			DisableSplice: true,
			// The symlinks (ima, the unsuffixed lists) are the same for
			// every caller and never change: the kernel may keep their
			// targets, saving two READLINK round trips per open of
			// /sys/kernel/security/ima/ascii_runtime_measurements.
			EnableSymlinkCaching: true,
		},
		EntryTimeout:    &t,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		NullPermissions: true,
		UID:             0,
		GID:             0,
	}
}

// dirNode is a securityfs directory.
type dirNode struct {
	gofs.Inode
	frozenDir
}

// symlinkNode is a securityfs symlink.
type symlinkNode struct {
	gofs.Inode
	frozenFile
	target string
}

func (r *Root) setAttr(out *fuse.Attr, mode uint32) {
	out.Mode = mode
	out.Uid, out.Gid = 0, 0
	out.Size = 0
	out.Nlink = 1
	out.SetTimes(&r.mtime, &r.mtime, &r.mtime)
	out.Blksize = uint32(r.opts.MaxRead)
}

// Getattr implements fs.NodeGetattrer.
func (r *Root) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.setAttr(&out.Attr, syscall.S_IFDIR|modeDir)
	out.Nlink = 3
	return 0
}

// Statfs implements fs.NodeStatfser: like securityfs (magic shows in statfs
// only as FUSE's, but the name length and block size match).
func (r *Root) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return 0
}

// Getattr implements fs.NodeGetattrer.
func (d *dirNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.root.setAttr(&out.Attr, syscall.S_IFDIR|modeDir)
	out.Nlink = 2
	return 0
}

// Getattr implements fs.NodeGetattrer.
func (s *symlinkNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	s.root.setAttr(&out.Attr, syscall.S_IFLNK|modeSymlink)
	out.Size = uint64(len(s.target))
	return 0
}

// Readlink implements fs.NodeReadlinker.
func (s *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(s.target), 0
}

// OnAdd builds the tree.
func (r *Root) OnAdd(ctx context.Context) {
	file := r.frozenFile
	r.AddChild("ima", r.NewPersistentInode(ctx, &symlinkNode{frozenFile: file, target: "integrity/ima"}, gofs.StableAttr{Mode: syscall.S_IFLNK}), false)
	integrity := r.NewPersistentInode(ctx, &dirNode{frozenDir: r.frozenDir}, gofs.StableAttr{Mode: syscall.S_IFDIR})
	r.AddChild("integrity", integrity, false)
	ima := r.NewPersistentInode(ctx, &dirNode{frozenDir: r.frozenDir}, gofs.StableAttr{Mode: syscall.S_IFDIR})
	integrity.AddChild("ima", ima, false)

	add := func(name string, node gofs.InodeEmbedder) {
		ima.AddChild(name, r.NewPersistentInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFREG}), false)
	}
	link := func(name, target string) {
		ima.AddChild(name, r.NewPersistentInode(ctx, &symlinkNode{frozenFile: file, target: target}, gofs.StableAttr{Mode: syscall.S_IFLNK}), false)
	}
	for _, bank := range []measurelog.Algo{measurelog.SHA1, measurelog.SHA256} {
		add("ascii_runtime_measurements_"+bank.String(), &listNode{frozenFile: file, format: measurelog.ASCII, bank: bank})
		add("binary_runtime_measurements_"+bank.String(), &listNode{frozenFile: file, format: measurelog.Binary, bank: bank})
	}
	link("binary_runtime_measurements", "binary_runtime_measurements_sha1")
	link("ascii_runtime_measurements", "ascii_runtime_measurements_sha1")
	add("runtime_measurements_count", &counterNode{frozenFile: file, value: func(ns *imans.Namespace) int64 { return int64(ns.List.Len()) }})
	add("violations", &counterNode{frozenFile: file, value: func(ns *imans.Namespace) int64 { return ns.List.Violations() }})
	add("policy", &policyNode{root: r})
	add(QuoteFileName, &quoteNode{root: r})
}
