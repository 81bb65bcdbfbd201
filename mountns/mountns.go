package mountns

import (
	"errors"
	"os"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options are the mount options of a FUSE connection made by MountFUSE.
type Options struct {
	FSName     string // source shown in mountinfo ("imafs" if empty)
	Subtype    string // type is "fuse.<Subtype>" ("imafs" if empty)
	AllowOther bool
	MaxRead    int  // 0: kernel default
	MkdirAll   bool // create missing target directories inside the namespace
}

var errNotImplemented = errors.New("mountns: not implemented yet")

// MountFUSE opens /dev/fuse and mounts it at target inside the mount namespace of pid.
func MountFUSE(pid int, target string, opts Options) (*os.File, error) {
	return nil, errNotImplemented
}

// Unmount unmounts target inside the mount namespace of pid.
func Unmount(pid int, target string, lazy bool) error { return errNotImplemented }

// Serve serves root on dev, a /dev/fuse fd mounted by MountFUSE.
func Serve(dev *os.File, root fs.InodeEmbedder, opts *fs.Options) (*fuse.Server, error) {
	return nil, errNotImplemented
}
