// Package vtpm gives each imafs namespace a TPM of its own (one swtpm per
// namespace) and reads the host's TPM.
//
//	m, err := vtpm.NewManager(vtpm.ManagerOptions{StateDir: s, SocketDir: r, Host: hostAttester})
//	err = m.Attach(ns.ID, ns.List)  // start swtpm, replay the list, follow it
//	bundle, err := m.Quote(id, nonce)
//	err = m.Detach(id)              // stops the swtpm, removes its state
//	err = m.Close()                 // stops every swtpm, keeps the state
//	err = vtpm.Verify(bundle, ...)  // offline; says what failed (Err* values)
//
// Invariants:
//   - Each entry extends its PCR (10 unless pcr=) in the sha1 and sha256
//     banks with its template digests, as measurelog replays it: the TPM
//     holds a prefix of the list and a quote covers exactly that prefix.
//   - Until a fresh swtpm is resynced (CatchUp, Resync), Extend and Quote
//     fail with ErrNotSynced.
//   - The attestation key persists in the swtpm state across restarts;
//     swtpm exits with the daemon's connection (no orphans).
//   - A bundle is trusted only through a pinned key or the host TPM's
//     binding (HostAttester); otherwise it proves self-consistency only.
//
// OpenHost opens /dev/tpmrm0 or a swtpm socket; BootAggregate computes IMA's
// boot_aggregate from it. Details: docs/packages/vtpm.md.
package vtpm
