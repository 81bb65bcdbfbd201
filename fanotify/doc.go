// Package fanotify is imafs's measurement and appraisal engine for stock
// kernels (no IMA, or IMA without namespaces): it turns fanotify permission
// events in attached containers into IMA hooks, matches them against the
// container's policy, records measurements through imans.Registry.Record
// (container list and host list) and enforces appraisal with FAN_DENY.
//
// # Events and hooks
//
//	FAN_OPEN_EXEC_PERM → BPRM_CHECK, mask MAY_EXEC
//	FAN_OPEN_PERM      → FILE_CHECK, mask of the open (MAY_READ, MAY_WRITE, MAY_APPEND)
//
// The open's mask is not in the event (the event fd is the daemon's own
// O_RDONLY descriptor, so its fdinfo says nothing about the caller): the
// caller is blocked in its open system call, and /proc/TID/syscall shows
// that call and its flags (FAN_REPORT_TID gives the thread). When that
// fails (io_uring, exotic calls) the mask is MAY_READ.
//
// An event's thread is resolved to its container exactly like a FUSE caller
// (nsresolve.Resolver.Caller + imans.Registry.ForCaller) and matched against
// that container's policy, with uids and gids mapped into the container's
// user namespace. The hashing happens before the answer, so the entry is in
// the list before the exec or open proceeds.
//
// # Groups, marks and ignore marks
//
// One fanotify group per container (FAN_CLASS_CONTENT, FAN_UNLIMITED_QUEUE
// so permission events are never dropped-and-allowed on overflow,
// FAN_REPORT_TID). Ignore marks belong to a group, so with one group per
// container a file measured (and appraised) in one container gets an ignore
// mark for that container only: its next exec there costs no round trip,
// while another container still sees it. The ignore mark is added without
// FAN_MARK_IGNORED_SURV_MODIFY, so the kernel clears it on the first write
// to the file, and with FAN_MARK_EVICTABLE, so it does not pin the inode in
// memory (an evicted inode loses its mark; the cache answers next time). At
// most 131072 ignore marks per container are kept; then they are flushed.
// The price of per-container groups: root's fanotify group limit
// (/proc/sys/fs/fanotify/max_user_groups, 128 by default) bounds the number
// of watched containers; raise it on dense nodes.
//
// A group answers only for its own container's tasks: events of host tasks
// and of other registered containers (a nested container on the same
// superblock has its own group) are allowed at once by this group.
//
// Ignore marks are only used when the decision cannot depend on the caller
// (no uid/euid/gid/egid/subj_* rule for the hook, and no mask= for
// FILE_CHECK); otherwise a per-container cache keyed by (device, inode)
// and validated by change time, modification time and size answers already
// measured files without hashing. A policy change (or a change of the
// container's key directory) flushes both.
//
// Marks: a filesystem mark (FAN_MARK_FILESYSTEM) on every superblock that is
// the container's own, which also covers mounts copied by `unshare -m` inside
// the container; mount marks (FAN_MARK_MOUNT) on the container's mounts of
// file systems the host shares. A superblock is the host's when it is the
// host's root file system (st_dev of the daemon's "/" and, when readable,
// /proc/1/root) or mounted in the host's mount namespace (the daemon's own
// mountinfo, which must be the host's, plus /proc/1/mountinfo when
// readable), overlay excepted: container runtimes create one overlay
// superblock per container and mount it in the host namespace too. A
// filesystem mark is therefore never placed on `/` or
// any other host file system. Pseudo file systems (proc, sysfs, cgroup, ...)
// and FUSE file systems of imafs and lxcfs are not marked. A container that
// shares the host mount namespace is not marked at all. A container attached
// before its pivot_root (an OCI createRuntime hook) still has the host's
// root: then only its own mounts are marked, those of its mount table that
// are not copies of the host's (the rootfs the runtime mounted, its /proc,
// volumes), and only with mount marks, so its first exec after pivot_root
// is already seen; filesystem marks follow with the rescan after pivot. The
// container's mountinfo (and key directory) is rescanned every
// Options.Rescan and new mounts are marked.
//
// Names are the paths as the container's task sees them: the event fd's
// /proc/self/fd link with the task's /proc/TID/root link cut off the front
// (see fileName).
//
// # Queues, workers and failures
//
// Each container has its own reader, bounded queue (Options.QueueLen) and
// workers (Options.ContainerWorkers); a global limit (Options.Workers)
// bounds the decisions made at once. A container that floods opens fills
// only its own queue; the others keep their latency.
//
// Every permission event is answered: by a worker, or by the failure mode
// when the container's queue is full, when the decision takes longer than
// Options.Timeout, or when hashing fails. The failure mode is fail-closed
// (FAN_DENY) for containers whose policy has appraise rules and fail-open
// for measure-only containers (Options.FailClosed overrides it per
// container). What fail-open lets through unmeasured is recorded as a
// violation entry (an exec that overflowed the queue, a file that could not
// be hashed in time), so a verifier sees that the list is incomplete.
//
// The daemon's own accesses are answered at once by the reader (never
// queued), and the daemon reads files only through the events' own
// descriptors, which generate no events. Closing a group's last descriptor
// makes the kernel allow the events still pending in it.
//
// # Surviving the daemon: the keeper
//
// With Options.Keeper, a keeper process (RunKeeper) holds a duplicate of
// every group, so a daemon that crashes (or Suspends for its successor)
// leaves the marks in place and the containers' accesses wait in the
// groups. The next engine on the same keeper takes each group over,
// answers by the failure mode the events its predecessor read and never
// answered (the kernel matches an answer by descriptor number only, and
// the predecessor reported its highest one), records a violation entry for
// each one it allows, and then reads the events that waited. Detach (and
// Close, a clean shutdown) release the groups in the keeper too; a keeper
// with no daemon connected for its grace period releases everything.
//
// Policy changes are noticed on the container's next event and by a poll
// (every Options.PolicyPoll, 50ms): FAN_OPEN_EXEC_PERM is always marked, so
// execs see a new policy at once; FAN_OPEN_PERM (and FAN_CLOSE_WRITE) are
// added when a FILE_CHECK rule first appears, within one poll, and are kept
// afterwards. (A policy-change notification from imans would close that
// window.)
//
// An exec's open arrives twice, as FAN_OPEN_EXEC_PERM and FAN_OPEN_PERM;
// only the first is an IMA hook (BPRM_CHECK). The twin is recognised by
// /proc/TID/syscall (execve) and only used for an ignore mark.
//
// # Violations
//
// open_writers: a FILE_CHECK read measurement of a file that a task of the
// container holds open for write (write opens are counted through
// FAN_OPEN_PERM, closes through FAN_CLOSE_WRITE; only while the policy has
// FILE_CHECK rules; a write open of a file whose FILE_CHECK result is held
// by an ignore mark is not seen, the first write clears the mark).
// ToMToU, both of the kernel's cases: a write open (FAN_OPEN_PERM) of a
// file the container measured while some task holds it open read-only (the
// kernel's i_readcount, found by walking /proc/PID/fd on such a write open
// only), and a file that changed while it was hashed. A write open that an
// ignore mark hides (a FILE_CHECK rule whose decision does not depend on
// the open's mask or the caller, e.g. without mask=) is not seen, so it
// gives no ToMToU; tcb-style rules (mask=MAY_READ) set no ignore marks.
//
// # Gaps against the kernel
//
//   - mmap(PROT_EXEC) (MMAP_CHECK, MMAP_CHECK_REQPROT) is invisible to
//     fanotify: shared libraries mapped by ld.so are opened (FILE_CHECK,
//     when the policy asks for it) but their executable mapping is not
//     seen. Package mmapsrc reports these mappings with BPF on the syscall
//     tracepoints, after the fact (docs/mmap-source.md; a BPF LSM program
//     could measure before the mapping where the kernel loads one).
//   - An ELF interpreter (ld.so) is opened by execve with FMODE_EXEC, so it
//     appears as BPRM_CHECK where the kernel measures it under MMAP_CHECK.
//   - MODULE_CHECK, FIRMWARE_CHECK, KEXEC_*, POLICY_CHECK, CREDS_CHECK,
//     KEY_CHECK and CRITICAL_DATA have no fanotify event.
//   - Writes through a shared writable mapping do not clear ignore marks
//     (no FS_MODIFY event), as with the kernel's i_version-less file systems.
//   - fs-verity signatures (sigv3) and EVM are not appraised.
package fanotify
