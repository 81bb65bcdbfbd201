// Package fanotify is imafs's measurement and appraisal engine for stock
// kernels: it turns fanotify permission events in attached containers into
// IMA hooks, matches them against the container's policy, records through
// imans.Registry.Record and enforces appraisal with FAN_DENY.
//
//	eng, err := fanotify.New(fanotify.Options{Registry: reg, KeyDir: dir, Keeper: k})
//	...
//	eng.Suspend() // imafs upgrade: the keeper holds the groups for the successor
//	eng.Close()   // shutdown: the groups are released
//
// Hooks: FAN_OPEN_EXEC_PERM is BPRM_CHECK (MAY_EXEC), FAN_OPEN_PERM is
// FILE_CHECK with the open's mask (read from /proc/TID/syscall).
//
// Invariants:
//   - Every permission event is answered: by a worker, or by the failure
//     mode (fail-closed for containers whose policy appraises, else
//     fail-open) on overflow, timeout or error; what fail-open lets through
//     unmeasured is a violation entry.
//   - An access proceeds only after its measurement is recorded.
//   - One group per container; a group answers only for its container's
//     tasks. No filesystem mark on a host file system.
//   - Ignore marks only where the decision cannot depend on the caller
//     (policy.Policy.DependsOnCaller); a policy or key change flushes them
//     and the file cache.
//   - An event is handled in the kernel's process_measurement shape: plan
//     (resolve, match, decide what is left), collect (security.ima, hash),
//     store / appraise / audit (handle.go).
//   - With Options.Keeper the groups outlive the daemon (RunKeeper); the
//     next engine takes them over and answers what its predecessor left.
//   - With Options.Mmap an open also appraises the file for MMAP_CHECK
//     (mmap.go): verified digests go to the mmap source, which refuses
//     executable mappings of anything else (docs/mmap-source.md).
//
// Marks, queues, the keeper, violations and the gaps against the kernel
// are described in docs/packages/fanotify.md.
package fanotify
