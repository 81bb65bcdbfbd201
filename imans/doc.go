// Package imans is the registry of imafs namespaces and the one measurement
// pipeline every measurement source feeds.
//
//	reg, err := imans.NewRegistry(imans.Options{StateDir: dir}) // replays the host journal
//	restored := reg.Restore()                                   // containers still running
//	ns, err := reg.Attach(id, initPid, ociConfig)               // pins its namespaces
//	remove := reg.AddObserver(o); defer remove()
//	ns = reg.ForCaller(caller)                                  // nearest registered ancestor, else host
//	err = reg.Record(ns, entry)                                 // the single sink
//
// Invariants:
//   - Record appends to the namespace's list and to the host's; with a
//     state directory it journals (host first) and fsyncs before any list
//     sees the entry: nothing acknowledged is lost, no reader sees what a
//     crash could take back. Records share writes and fsyncs (group commit)
//     and the lists' order is the journals' order.
//   - A namespace's template and PCR for a decision come from
//     Namespace.Target only.
//   - Restore brings back exactly the containers whose init is the same
//     process (pid, start time, boot id). A damaged journal is never cut
//     silently: its valid prefix is restored, a <journal-damaged> violation
//     recorded and the namespace marked degraded; a full or failing state
//     disk fails Records (ErrStorage), never the journals.
//   - Detach (explicit or init exit) archives the state; Close keeps it.
//   - Freeze/Thaw hand the state directory to an upgrade's successor and
//     take it back (Records fail with ErrFrozen meanwhile).
//   - Every registration (AddObserver) returns its undo.
//
// Durability, what is kept where, and what happens while the daemon is down
// are described in docs/packages/imans.md.
package imans
