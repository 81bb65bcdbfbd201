// Package mountns mounts a FUSE connection inside another process's mount
// namespace (no bind mount from the host), and serves it with go-fuse.
//
//	dev, err := mountns.MountFUSE(initPid, "/sys/kernel/security", mountns.Options{AllowOther: true})
//	srv, err := mountns.Serve(dev, root, &fs.Options{...})   // go-fuse "/dev/fd/N" convention
//	...
//	err = mountns.Unmount(initPid, "/sys/kernel/security", true) // lazy; then srv.Wait()
//
// How: the daemon opens /dev/fuse (O_CLOEXEC), then on a fresh, locked OS
// thread calls unshare(CLONE_FS), setns(the process's mnt ns, CLONE_NEWNS),
// chroot to the process's root (/proc/PID/root, opened beforehand, so a
// pivot_root'ed or chroot'ed container's own path is used), and
// mount("imafs", target, "fuse.imafs", MS_NOSUID|MS_NODEV|MS_NOEXEC,
// "fd=N,rootmode=40000,user_id=0,group_id=0,allow_other"). The thread is
// never unlocked, so the runtime terminates it when its goroutine ends: no
// thread of the daemon stays in (and pins) the container's namespace. The
// fd is then served through go-fuse's magic "/dev/fd/N" mountpoint: go-fuse
// mounts nothing and reads the INIT request the kernel queued at mount time.
//
// # Pitfalls (each found here, each handled in the code)
//
//   - Never on the main thread: a goroutine that exits while locked to the
//     main thread does not terminate it (the runtime can't end the thread
//     group leader; it wedges it). The leader would stay in the container's
//     mount namespace forever, and /proc/self/{mountinfo,ns/mnt,root}, which
//     follow the leader, would show the container's mounts to the whole
//     daemon. Observed in about half the test runs before the fix;
//     TestNoThreadLeftInNamespace catches it.
//   - Inside the container's root "/proc" is absent or another pid
//     namespace's: /proc/thread-self is reached through an fd of the host's
//     /proc opened before entering.
//   - Inside a chroot, mountinfo omits mounts whose root lies outside it, so
//     the mount table is read after setns and before the chroot.
//   - A mount onto a shared mount propagates to its peers, possibly the
//     host: MountFUSE refuses (ErrShared) unless Options.AllowShared.
//   - go-fuse wraps the fd it is given in its own os.File and closes it when
//     serving ends: Serve hands it a dup and closes the caller's file, so no
//     fd number is ever closed twice. Server.Unmount can't work with a
//     "/dev/fd/N" mountpoint: use Unmount here; after a lazy unmount the
//     kernel ends the connection once the last user lets go, and Serve's
//     loop returns (srv.Wait()).
//   - MountOptions' mount flags (AllowOther, FsName, Options) are ignored by
//     go-fuse for "/dev/fd/N"; they are Options of MountFUSE instead.
//   - MountFUSE never stacks: if target already is an imafs mount (live, or
//     dead after a daemon crash: ENOTCONN) it fails with ErrMounted; the
//     restart plan is Unmount(pid, target, true) then MountFUSE
//     (TestRemountAfterDeadServer). It statx()es the target before mounting,
//     which may ask a live imafs server for attributes: never call it from a
//     goroutine the server itself needs (never touch your own mountpoint
//     from a serving path).
//   - Keep /dev/fuse fds O_CLOEXEC: a child that inherits one keeps the
//     connection alive after the daemon is gone.
//   - A user-namespaced container's mount namespace is owned by its user
//     namespace; host root may still setns into it and mount FUSE there
//     (the fs_context belongs to the daemon's initial user namespace).
package mountns
