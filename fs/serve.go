package fs

import (
	"fmt"
	"os"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/mountns"
)

// rawFS guards the page cache. Every file is opened FOPEN_DIRECT_IO, but
// the kernel's splice path (sendfile(2), used by busybox cat, and
// copy_file_range) still reads FUSE files through the page cache, which is
// per inode, not per caller. Such READs are the only ones without
// FUSE_READ_LOCKOWNER (direct reads always carry the caller's lock owner), so
// they fail with EIO: sendfile then fails and its callers fall back to
// read(2), which is answered for the caller. No caller's content ever enters
// the page cache.
//
// It also counts the open file and directory handles of its tree (see
// Root.OpenHandles) and notes when a path was last looked up or opened
// (Root.LastOpen).
type rawFS struct {
	fuse.RawFileSystem
	root *Root
}

// Lookup implements fuse.RawFileSystem.
func (r rawFS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	r.root.lastOpen.Store(time.Now().UnixNano())
	return r.RawFileSystem.Lookup(cancel, header, name, out)
}

// Open implements fuse.RawFileSystem.
func (r rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	r.root.lastOpen.Store(time.Now().UnixNano())
	st := r.RawFileSystem.Open(cancel, in, out)
	if st == fuse.OK {
		r.root.handles.Add(1)
	}
	return st
}

// Release implements fuse.RawFileSystem.
func (r rawFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	r.RawFileSystem.Release(cancel, in)
	r.root.handles.Add(-1)
}

// OpenDir implements fuse.RawFileSystem.
func (r rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	r.root.lastOpen.Store(time.Now().UnixNano())
	st := r.RawFileSystem.OpenDir(cancel, in, out)
	if st == fuse.OK {
		r.root.handles.Add(1)
	}
	return st
}

// ReleaseDir implements fuse.RawFileSystem.
func (r rawFS) ReleaseDir(in *fuse.ReleaseIn) {
	r.RawFileSystem.ReleaseDir(in)
	r.root.handles.Add(-1)
}

// Read implements fuse.RawFileSystem.
func (r rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if in.ReadFlags&fuse.READ_LOCKOWNER == 0 {
		return nil, fuse.EIO
	}
	return r.RawFileSystem.Read(cancel, in, buf)
}

// RawFileSystem returns the FUSE protocol handler of the tree rooted at r.
func (r *Root) RawFileSystem() fuse.RawFileSystem {
	return rawFS{RawFileSystem: gofs.NewNodeFS(r, r.MountOptions()), root: r}
}

// OpenHandles returns how many files and directories of the tree are open
// (opened and not yet released). A daemon handing its mounts over waits for
// this to reach 0 before it exits, so that no reader's open file dies with it.
func (r *Root) OpenHandles() int64 { return r.handles.Load() }

// LastOpen is when the tree last received a LOOKUP, OPEN or OPENDIR (zero:
// never). A daemon handing its mounts over also waits until this is a
// while ago: a path walk that entered the old mount just before the swap
// opens its file right after.
func (r *Root) LastOpen() time.Time {
	if ns := r.lastOpen.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Server is a served tree; Wait returns once its connection has ended.
type Server interface{ Wait() }

// MountedServer is a tree Mount mounted; Unmount unmounts it and waits for
// its connection to end.
type MountedServer interface {
	Server
	Unmount() error
}

// Serve serves r on dev, a /dev/fuse file already mounted (see
// mountns.MountFUSE); it takes ownership of dev. The server runs in a
// goroutine; Wait for it. A container's tree (Options.Owner set) is served
// by a mountns.Conn, which costs an idle connection no reader thread and
// no buffer; the host's tree by go-fuse's own server, whose readers keep
// their 1 MiB buffers (one tree pays for them).
func Serve(dev *os.File, r *Root) (Server, error) {
	mo := r.MountOptions().MountOptions
	if r.opts.Owner != nil {
		return mountns.ServeConn(dev, r.RawFileSystem(), mo)
	}
	return mountns.ServeRaw(dev, r.RawFileSystem(), mo)
}

// Mount mounts r at dir in the daemon's own mount namespace (the host view,
// tests), through mountns as the daemon mounts (its /dev/fuse close-on-exec:
// no child keeps the connection alive), and serves it as Serve does.
func Mount(dir string, r *Root) (MountedServer, error) {
	dev, err := mountns.MountFUSE(os.Getpid(), dir, mountns.Options{AllowOther: true, AllowShared: true})
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	srv, err := Serve(dev, r)
	if err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	return mounted{Server: srv, dir: dir}, nil
}

type mounted struct {
	Server
	dir string
}

// Unmount unmounts the tree (retrying while the kernel still counts a
// just-closed file, as go-fuse's Unmount does) and waits for its
// connection to end.
func (m mounted) Unmount() error {
	var err error
	for try, delay := 0, time.Duration(0); try < 5; try++ {
		if err = unix.Unmount(m.dir, 0); err == nil {
			break
		}
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", m.dir, err)
	}
	m.Wait()
	return nil
}
