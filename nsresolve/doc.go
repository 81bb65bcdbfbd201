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
// # Identity and safety
//
// A namespace is named by an NSID, the device and inode of its nsfs file.
// The kernel reuses nsfs inode numbers once a namespace is freed, so two
// NSIDs may only be compared while both namespaces are held: the registry
// holds its containers' namespaces with Pin, the Resolver's ancestry cache
// holds an fd per cached namespace (so each cached ancestor chain stays
// valid: a pid namespace holds a reference to its parent), and a caller's own
// namespace is held by the caller itself while it waits for its FUSE reply.
// The cache is a bounded LRU; evicting an entry closes its fd (deferred
// while an Owner call uses it). Owner on a caller whose namespace is not
// cached re-opens /proc/TID and checks it still is the same namespace.
// Privileged caches each user namespace's uid_map the same way (pinned by
// an ns fd; maps are write-once, and an unwritten, empty map is never cached).
//
// Caller looks the tid number up exactly once, with pidfd_open(tid,
// PIDFD_THREAD), and reads everything else through that pidfd
// (PIDFD_GET_INFO for the thread group and ids, PIDFD_GET_{PID,USER,MNT}_NAMESPACE
// for the namespaces); capget(2), which only takes a number, is called before
// PIDFD_GET_INFO so that the thread is known alive across it. Kernels before
// 6.13 (no PIDFD_GET_INFO) fall back to an open /proc/TID directory, which is
// bound to the task's struct pid the same way. Either way a task that exited
// gives an error wrapping ErrGone, never another task's answer.
//
// # Privilege rule
//
// Privileged(c, userNS) requires c.UserNS == userNS exactly, c's euid mapped
// to 0 in userNS, and CAP_SYS_ADMIN in c.CapEff. A task in a child user
// namespace of the container (`unshare -U -r` inside it) is not privileged
// for the container, and host root is not privileged for a container's view
// (it has the host view): the same rule the kernel applies to capabilities.
// RootIn is the uid-0 half alone (the kernel lets uid 0 read IMA's 0440
// lists by DAC; writing the policy needs CAP_SYS_ADMIN).
//
// # Facts measured on this machine (kernel 6.18)
//
//   - The FUSE request pid is the caller's thread id in the daemon's pid
//     namespace; the daemon must run in the host pid namespace. RELEASE
//     and some other requests carry pid 0: Caller(0) is an error, so bind
//     the identity to the file handle at OPEN.
//   - /proc/TID works for a non-leader thread (hidden from readdir only);
//     its status shows the thread group's Tgid.
//   - pid_max is 32768 here: pid reuse is a realistic event, not theory.
//   - A zombie's /proc/PID/status and ns/user still answer (they come from
//     its credentials), its ns/mnt and ns/pid do not; Caller fails on a
//     zombie with ErrGone.
//   - NS_GET_PARENT fails with EPERM at the initial pid namespace (and
//     above the caller's own); returned fds are O_CLOEXEC.
//   - /proc/PID/status of a many-threaded process is slow (tens of µs): the
//     pidfd path avoids it. Measured (go test -bench . ./nsresolve, CPU time
//     per op on this shared 2-core VM at load ~12): Caller+Owner 12-15 µs
//     with the ancestry cache, 18-39 µs without (grows with depth), 30-59
//     µs through /proc; Privileged 1 µs with its uid_map cached, 16 µs
//     when it reads /proc/TID/uid_map.
//   - runc's default spec gives container root no CAP_SYS_ADMIN (only
//     AUDIT_WRITE, KILL, NET_BIND_SERVICE): such a root is RootIn but not
//     Privileged, so it can read but not write the policy.
//   - A container that shares the host pid namespace resolves to the host
//     (Owner returns ok=false): the registry needs another anchor for it,
//     e.g. Caller.MntNS against Pinned.MntNS.
package nsresolve
