// Package imans is the registry of imafs namespaces and the one measurement
// pipeline every measurement source feeds.
//
// An imafs namespace belongs to a registered container: Attach pins the
// container's namespaces (pid, user, mount, cgroup) through its init process
// and starts a measurement list the way a kernel starts one (boot_aggregate,
// then an ima-buf entry over the container's OCI config). The host is a
// namespace too; it sees every entry of every container.
//
// ForCaller maps a resolved caller to the namespace that answers for it: the
// registered container owning the caller's pid namespace or its nearest
// registered ancestor, else the host. Record is the single sink: it appends an
// entry to its namespace's list and to the host's list.
//
// A container whose init exits is detached by itself: the registry watches
// every pinned init's pidfd with one epoll loop.
//
// # Durability (Options.StateDir)
//
// With a state directory nothing is acknowledged before it is on disk:
//
//   - Record writes the entry to the container's journal and to the host's
//     (binary-list records, sha1 bank, as measurelog.OpenJournal reads them),
//     fsyncs both — the host's first, so that a crash in between leaves the
//     host list a superset of every container's, never short of one of their
//     entries — and only then appends it to the in-memory lists and
//     returns. Concurrent Records share the writes and fsyncs (group commit:
//     one flush at a time takes everything queued meanwhile), and a flush
//     applies its batch to the lists in queue order, so the lists' order is
//     the journals' order. A measurement source allows the exec/open only
//     after Record returned, and no reader ever sees an entry a crash could
//     take back. (The kernel's duplicate rule is applied at replay too, so a
//     duplicate is journaled but never listed.)
//   - LoadPolicy saves the namespace's whole resulting policy (write, fsync,
//     rename) before it takes effect.
//   - Attach saves the container's record (ContainerRecord: id, init pid,
//     its start time from /proc/PID/stat, the boot id, namespace inodes,
//     the OCI config digest, and the mount target once the daemon has
//     mounted: SetMount).
//
// NewRegistry replays the host's journal; Restore then brings back every
// container whose init is still the same process (pid, start time and boot
// id as recorded, checked again once its pidfd is held): namespaces pinned
// again, list and policy replayed — lists, counters and PCRs identical to
// what was acknowledged. A torn tail (a record cut short by the crash,
// never acknowledged) is cut and logged with its offset by
// measurelog.OpenJournal; replay logs progress for large journals.
//
// What is kept where (decided):
//
//   - Detach (explicit, or the init exited — also while the daemon was down)
//     moves the container's directory to archive/ID.UNIXNANO: the list of a
//     container that ran stays available to the operator and to a verifier
//     after the fact, and a new container may reuse the id. The daemon never
//     deletes archives; pruning them is the operator's (they are small:
//     one binary record per measurement).
//   - A journal damaged other than by a torn tail (a corrupt record or
//     length field, a bad digest, an empty or missing journal next to its
//     attach record, the host's likewise) is never cut silently: the
//     original is kept byte for byte, the valid prefix restored, a
//     <journal-damaged> violation entry recorded and the namespace marked
//     degraded (see damage.go). A container whose record or policy can't
//     be read, or whose journal can't be opened at all, moves to
//     quarantine/ID.UNIXNANO and is not restored; the others are.
//   - A full or failing state disk fails the Records of that moment
//     (ErrStorage), never the journals: a failed write is cut back, the
//     namespaces are marked degraded, violations are owed and written
//     first once writes succeed, which a retry loop notices by itself
//     (see storage.go).
//   - Close (daemon shutdown, SIGTERM) keeps every container's state: the
//     next daemon on the same state directory re-attaches them. Only an
//     explicit detach or the container's exit ends a registration.
//
// Freeze and Thaw serve `imafs upgrade`: the running daemon waits for the
// Records in flight, closes every journal (later Records fail with
// ErrFrozen) and hands the state directory to its successor, which replays
// it like after a restart; Thaw takes it back if the successor fails.
//
// # While the daemon is down
//
// The daemon's FUSE mounts answer ENOTCONN until the new daemon, on start,
// replaces the dead mount in each restored container's mount namespace with
// a fresh one (cmd/imafs: mounted beneath the dead one, which is then
// detached): new opens work again without the container's help; a file
// descriptor opened before the crash stays dead (ENOTCONN) and must be
// reopened. After a SIGTERM the mounts were unmounted cleanly, so until the
// restart a reader sees no ima directory (ENOENT) rather than ENOTCONN. A
// planned restart without any gap for readers is `imafs upgrade`: the old
// daemon keeps serving (frozen) until the successor's mounts are in place.
//
// Appraisal and measurement on stock kernels come from the daemon's fanotify
// groups. The kernel answers the events pending in a group with FAN_ALLOW
// only when the group's last descriptor closes (fanotify_release), so the
// daemon keeps a duplicate of every group in a keeper process of its own
// (fanotify.RunKeeper, `imafs fanotify-keeper`): when the daemon dies, the
// marks stay and the containers' execs and opens wait in the groups; the
// restarted daemon takes the groups over, answers by the failure mode the
// few events its predecessor had read and not answered (allowed ones get a
// violation entry), and measures and appraises the ones that waited. A
// daemon that does not come back within --fanotify-hold (30s) lets the
// keeper release the groups: then, until a daemon marks the containers
// again, execs and opens are neither measured nor appraised. With the
// kernel patch, measurement and appraisal happen in the kernel and are
// unaffected by the daemon's state: the kernel keeps tagged entries in its
// own list, which the restarted daemon reads again.
package imans
