// Package mountns owns every mount system call of imafs: it mounts a FUSE
// connection inside another process's mount namespace (no bind mount from
// the host), swaps one for a fresh one without a gap, unmounts it there, and
// serves a connection with go-fuse (its Server, or a Conn: go-fuse's
// protocol handlers with no thread or buffer held while the connection is
// idle, what a container's connection mostly is).
//
//	dev, err := mountns.MountFUSE(initPid, "/sys/kernel/security", mountns.Options{AllowOther: true})
//	srv, err := mountns.Serve(dev, root, &fs.Options{...})    // go-fuse "/dev/fd/N" convention
//	c, err := mountns.ServeConn(dev, rawFS, mountOptions)      // or: buffers only per request
//	dev, beneath, err := mountns.SwapFUSE(initPid, target, opts) // replace a predecessor's mount
//	err = mountns.Unmount(initPid, "/sys/kernel/security", true) // lazy; then srv.Wait()
//
// Invariants:
//   - Work in another namespace runs on a fresh locked OS thread that is
//     thrown away afterwards, never the main thread: no daemon thread stays
//     in (and pins) a container's namespace (InNamespace).
//   - A target is resolved against the process's root (pivot_root, chroot).
//   - MountFUSE never stacks (ErrMounted) and never mounts onto a shared
//     mount (ErrShared) unless Options.AllowShared; SwapFUSE uses the same
//     options and the same guard.
//   - /dev/fuse descriptors are O_CLOEXEC; Serve and ServeConn take
//     ownership of dev.
//
// How it works and the pitfalls found on the way: docs/packages/mountns.md.
package mountns
