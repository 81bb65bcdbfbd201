// Package nsresolve maps the pid of a FUSE request (or fanotify event) to the
// namespaces and credentials of the calling task, and walks the pid-namespace
// ancestry to find the registered imafs namespace that answers for it.
//
//	r := nsresolve.NewResolver()
//	c, err := r.Caller(int(header.Pid))          // at OPEN; bind the result to the handle
//	id, ok, err := r.Owner(c, registry.IsPidNS)  // nearest registered pid ns, ok=false: host
//	priv, err := r.Privileged(c, ownerUserNS)    // uid 0 + CAP_SYS_ADMIN in that user ns
//	p, err := nsresolve.Pin(initPid)             // registration: hold the container's namespaces
//
// Invariants:
//   - Two NSIDs are compared only while both namespaces are held (Pin, the
//     resolver's fd-pinned LRU cache, the waiting caller itself): nsfs inode
//     numbers are reused once a namespace is freed.
//   - Caller looks a tid up once (pidfd_open, then /proc/TID/ns) and reads
//     everything through those handles (or /proc/TID alone before 6.13): a
//     task that exited gives an error wrapping ErrGone, never another task's
//     answer. The handles are cached per tid; a hit re-reads all but the pid
//     namespace (a task keeps it for life) through them, which fails once
//     the task is reaped; CallerOfRequest takes the ids from the request.
//   - Privileged(c, userNS): c's user namespace is userNS exactly, its euid
//     maps to 0 there and it has CAP_SYS_ADMIN (the kernel's rule); RootIn
//     is the uid-0 half.
//
// Facts measured on this machine and the cache's design are in
// docs/packages/nsresolve.md.
package nsresolve
