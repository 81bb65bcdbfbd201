package fanotify

import (
	"fmt"
	"os"
	"strings"
)

// fileName returns the path of the event's file as the calling task sees
// it, like the kernel's d_path relative to the task's root.
//
// The event fd's /proc/self/fd link gives the path as far as the daemon can
// see it: for a file on a mount that is not reachable from the daemon's
// root (a container's own mount namespace) the kernel stops at that
// namespace's root, so a pivot_root'ed container's paths come out as the
// container sees them; for a chroot'ed (or not yet pivoted) container they
// come out with the host path of the container root in front. The task's
// /proc/TID/root link is computed the same way, so cutting it off the front
// gives the task's view in both cases.
func fileName(proc string, fd int, tids ...int) (string, error) {
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", fmt.Errorf("file name of fd %d: %w", fd, err)
	}
	for _, tid := range tids {
		if tid <= 0 {
			continue
		}
		root, err := os.Readlink(fmt.Sprintf("%s/%d/root", proc, tid))
		if err != nil {
			continue
		}
		return stripRoot(p, root), nil
	}
	return p, nil
}

// stripRoot removes the directory root from the front of path p.
func stripRoot(p, root string) string {
	root = strings.TrimSuffix(root, "/")
	switch {
	case root == "":
		return p
	case p == root:
		return "/"
	case strings.HasPrefix(p, root+"/"):
		return p[len(root):]
	}
	return p
}
