// Package daemon is `imafs serve`: an ordered list of components, each
// owning its state behind its own lock, started by one function for the
// first start, the restore of a previous daemon's containers and the
// rollback of a failed upgrade alike.
//
//	d, err := daemon.New(cfg, log) // every component started; the socket answers
//	code := d.Run(sigs)            // until a signal, a control failure or a handover
//
// The list, in start order (stopped in reverse):
//
//	host-tpm, registry, vtpm, mounts,            the state and the host view
//	kernel-source, fanotify, mmap, metrics,      the measurement sources
//	restore, control, readiness                  containers back, socket, READY=1
//
// Invariants:
//   - The control socket answers only once every source runs and every
//     restored container is back; a source that reads a backlog waits for
//     Env.Restored.
//   - Stop(handover) for `imafs upgrade` leaves what the successor takes
//     over (mounts serving, fanotify groups in the keeper, journals
//     frozen); a failed upgrade starts the same list again (Env.Rollback).
//   - Every registration a component makes (observers, metrics sources) is
//     undone by its Stop.
//   - Mount system calls happen in package mountns only.
//
// The life cycle (restarts, upgrades under systemd) is described in
// docs/architecture.md.
package daemon
