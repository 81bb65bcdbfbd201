package fs

import (
	"context"
	"os"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
)

// The tree is immutable for every caller, root included, as securityfs is:
// its directories have only a lookup operation (simple_dir_inode_operations)
// and its files no xattr handlers. go-fuse's bridge would answer UNLINK and
// RMDIR with success (and drop the entry from its tree) for a node without
// a handler, so every node refuses every change itself, with the errno the
// kernel gives on securityfs:
//
//   - a caller who is not uid 0 of its view (see Root.rootOfView) fails the
//     permission check on the root-owned 0755 directory or 0440 file first:
//     EACCES (or EPERM where the kernel says so: chmod, chown, utimes of a
//     file one does not own);
//   - uid 0 passes the permission check (it owns the entries) and then finds
//     no inode operation: EPERM for unlink, rmdir, rename, link, symlink,
//     mkdir and mknod (vfs_*: !dir->i_op->op), EACCES for the creation of a
//     regular file (lookup_open, vfs_create: no ->create), EOPNOTSUPP for
//     setxattr and removexattr (no xattr handler);
//   - setattr (truncate, chmod, chown, utimes) is EPERM for uid 0 where
//     securityfs's simple_setattr would change the in-memory inode only (see
//     docs/file-semantics.md); the policy and quote files keep their own
//     Setattr (a shell's `>` truncates to 0).
//
// The mount has no default_permissions: the kernel would then check modes
// against host uids, and root of a user-namespaced container (host uid
// 100000, no capability over init-owned inodes) could not read its own
// list. Checks are made here, per request, against the caller's view.

var (
	_ gofs.NodeUnlinker      = (*Root)(nil)
	_ gofs.NodeRmdirer       = (*Root)(nil)
	_ gofs.NodeMkdirer       = (*Root)(nil)
	_ gofs.NodeMknoder       = (*Root)(nil)
	_ gofs.NodeCreater       = (*Root)(nil)
	_ gofs.NodeSymlinker     = (*Root)(nil)
	_ gofs.NodeLinker        = (*Root)(nil)
	_ gofs.NodeRenamer       = (*Root)(nil)
	_ gofs.NodeSetattrer     = (*Root)(nil)
	_ gofs.NodeSetxattrer    = (*Root)(nil)
	_ gofs.NodeRemovexattrer = (*Root)(nil)

	_ gofs.NodeUnlinker      = (*dirNode)(nil)
	_ gofs.NodeRmdirer       = (*dirNode)(nil)
	_ gofs.NodeMkdirer       = (*dirNode)(nil)
	_ gofs.NodeMknoder       = (*dirNode)(nil)
	_ gofs.NodeCreater       = (*dirNode)(nil)
	_ gofs.NodeSymlinker     = (*dirNode)(nil)
	_ gofs.NodeLinker        = (*dirNode)(nil)
	_ gofs.NodeRenamer       = (*dirNode)(nil)
	_ gofs.NodeSetattrer     = (*dirNode)(nil)
	_ gofs.NodeSetxattrer    = (*dirNode)(nil)
	_ gofs.NodeRemovexattrer = (*dirNode)(nil)

	_ gofs.NodeSetattrer     = (*symlinkNode)(nil)
	_ gofs.NodeSetxattrer    = (*symlinkNode)(nil)
	_ gofs.NodeRemovexattrer = (*symlinkNode)(nil)
	_ gofs.NodeSetattrer     = (*listNode)(nil)
	_ gofs.NodeSetxattrer    = (*listNode)(nil)
	_ gofs.NodeRemovexattrer = (*listNode)(nil)
	_ gofs.NodeSetattrer     = (*counterNode)(nil)
	_ gofs.NodeSetxattrer    = (*counterNode)(nil)
	_ gofs.NodeRemovexattrer = (*counterNode)(nil)
	_ gofs.NodeSetxattrer    = (*policyNode)(nil)
	_ gofs.NodeRemovexattrer = (*policyNode)(nil)
	_ gofs.NodeSetxattrer    = (*quoteNode)(nil)
	_ gofs.NodeRemovexattrer = (*quoteNode)(nil)
)

// refuse answers a change of the tree: EACCES for a caller that is not uid 0
// of its view (or can't be resolved), rootErrno for uid 0.
func (r *Root) refuse(ctx context.Context, op string, rootErrno syscall.Errno) syscall.Errno {
	errno := syscall.EACCES
	c, ns, root := r.rootOfView(ctx)
	if root {
		errno = rootErrno
	}
	fields := logrus.Fields{"op": op, "errno": errno.Error()}
	if c != nil {
		fields["pid"], fields["euid"], fields["ns"] = c.PID, c.EUID, ns.ID
	}
	r.log.WithFields(fields).Debug("change of the tree refused")
	return errno
}

// setattrErrno is the answer to a SETATTR on a file or directory that
// nobody may change: EACCES for a size change by anyone but uid 0 (the
// write permission check), EPERM otherwise.
func (r *Root) setattrErrno(ctx context.Context, in *fuse.SetAttrIn) syscall.Errno {
	nonRoot := syscall.EPERM
	if in.Valid&fuse.FATTR_SIZE != 0 {
		nonRoot = syscall.EACCES
	}
	if errno := r.refuse(ctx, "setattr", syscall.EPERM); errno == syscall.EACCES {
		return nonRoot
	}
	return syscall.EPERM
}

// frozenNode refuses every change of a node itself: extended attributes.
type frozenNode struct{ root *Root }

// Setxattr implements fs.NodeSetxattrer: no xattr handler on securityfs.
func (n frozenNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.root.refuse(ctx, "setxattr", syscall.EOPNOTSUPP)
}

// Removexattr implements fs.NodeRemovexattrer.
func (n frozenNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.root.refuse(ctx, "removexattr", syscall.EOPNOTSUPP)
}

// frozenFile is a frozenNode that also refuses SETATTR (lists, counters,
// symlinks; not the policy and quote files, which take a shell's O_TRUNC).
type frozenFile struct{ frozenNode }

// Setattr implements fs.NodeSetattrer.
func (n frozenFile) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.root.setattrErrno(ctx, in)
}

// frozenDir is a frozenFile that also refuses every change of its entries.
type frozenDir struct{ frozenFile }

func newFrozenDir(r *Root) frozenDir { return frozenDir{frozenFile{frozenNode{root: r}}} }

// Unlink implements fs.NodeUnlinker.
func (d frozenDir) Unlink(ctx context.Context, name string) syscall.Errno {
	return d.root.refuse(ctx, "unlink", syscall.EPERM)
}

// Rmdir implements fs.NodeRmdirer.
func (d frozenDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	return d.root.refuse(ctx, "rmdir", syscall.EPERM)
}

// Mkdir implements fs.NodeMkdirer.
func (d frozenDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, d.root.refuse(ctx, "mkdir", syscall.EPERM)
}

// Mknod implements fs.NodeMknoder. FUSE sends a regular file's creation by
// mknod(2) as MKNOD too; the kernel's vfs_create answers it EACCES.
func (d frozenDir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if t := mode & syscall.S_IFMT; t == 0 || t == syscall.S_IFREG {
		return nil, d.root.refuse(ctx, "mknod", syscall.EACCES)
	}
	return nil, d.root.refuse(ctx, "mknod", syscall.EPERM)
}

// Create implements fs.NodeCreater: open(O_CREAT) of a new name.
func (d frozenDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, d.root.refuse(ctx, "create", syscall.EACCES)
}

// Symlink implements fs.NodeSymlinker.
func (d frozenDir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, d.root.refuse(ctx, "symlink", syscall.EPERM)
}

// Link implements fs.NodeLinker. With fs.protected_hardlinks on, the
// kernel's may_linkat refuses a non-root caller EPERM before the directory's
// permission check (the source is a file it can't read and write); FUSE
// without default_permissions passes that check, so it is made here.
func (d frozenDir) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	errno := d.root.refuse(ctx, "link", syscall.EPERM)
	if errno == syscall.EACCES && protectedHardlinks() {
		errno = syscall.EPERM
	}
	return nil, errno
}

// protectedHardlinks reports whether fs.protected_hardlinks is on.
func protectedHardlinks() bool {
	b, err := os.ReadFile("/proc/sys/fs/protected_hardlinks")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// Rename implements fs.NodeRenamer (rename, renameat2 with any flags).
func (d frozenDir) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return d.root.refuse(ctx, "rename", syscall.EPERM)
}

// Setxattr implements fs.NodeSetxattrer (policyfile.go has the rest of the
// policy file).
func (n *policyNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return frozenNode{n.root}.Setxattr(ctx, attr, data, flags)
}

// Removexattr implements fs.NodeRemovexattrer.
func (n *policyNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return frozenNode{n.root}.Removexattr(ctx, attr)
}

// Setxattr implements fs.NodeSetxattrer.
func (n *quoteNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return frozenNode{n.root}.Setxattr(ctx, attr, data, flags)
}

// Removexattr implements fs.NodeRemovexattrer.
func (n *quoteNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return frozenNode{n.root}.Removexattr(ctx, attr)
}
