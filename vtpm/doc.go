// Package vtpm gives each imafs namespace a TPM of its own and reads the
// host's TPM.
//
// # Per-namespace TPMs
//
// StartSWTPM runs one swtpm process (Debian swtpm, TPM 2.0) per namespace
// on a persistent state directory and holds the one connection swtpm
// serves, over its raw unixio socket (go-tpm's TCP transport speaks the
// Microsoft simulator protocol, not this). Every entry of the namespace's
// list extends the entry's PCR (10 unless a policy rule says pcr=) in the
// sha1 and sha256 banks, with the entry's template digests (all 0xff for
// a violation), in one TPM2_PCR_Extend, exactly as measurelog.PCRs
// replays it: the TPM and the list never disagree.
//
// How the daemon uses it (`imafs serve --vtpm swtpm [--tpm PATH]`): one
// Manager does the bookkeeping.
//
//	m, err := vtpm.NewManager(vtpm.ManagerOptions{
//	    StateDir: "/var/lib/imafs/vtpm", SocketDir: "/run/imafs/vtpm",
//	    Host: hostAttester, // nil without --tpm
//	})
//	on attach, and at start-up for every namespace restored from its
//	journal (after its List has been rebuilt):
//	    err = m.Attach(ns.ID, ns.List) // start swtpm, replay the list, follow it
//	control request "quote" {id, nonce}:
//	    bundle, err := m.Quote(id, nonce)
//	`imafs ps --json`: ns.List.PCR(...); m.PCR(id, bank, 10) is the vTPM's
//	                   (equal once the follower has caught up)
//	on detach:   m.Detach(id) // stops the swtpm, removes its state
//	on shutdown: m.Close()    // stops every swtpm, keeps the state
//
// Underneath, per namespace: StartSWTPM; CatchUp (a fresh swtpm's PCRs are
// zero: it replays the whole list); Follow, which extends each entry
// appended later, in list order, off the measurement's critical path (one
// extend is a ~0.2 ms swtpm round trip). The TPM always holds a prefix of
// the list and a quote covers exactly that prefix. If the swtpm dies, the
// Manager starts a new one on the same state directory and replays the
// list. The synchronous alternative to CatchUp/Follow is Resync(entries)
// after the start, then Extend(e) for every entry List.Append accepted, in
// the same order (under the namespace's record lock); use one style per
// SWTPM, never both.
//
// A swtpm restart (daemon restart) resets every PCR (TPM2_Startup(CLEAR));
// the persistent state, and with it the attestation key, survives. Until
// Resync or CatchUp has run, Extend and Quote fail with ErrNotSynced. swtpm runs with
// --terminate, so it exits when the daemon's connection closes: a crashed
// daemon leaves no orphan, and its successor starts a fresh swtpm on the
// same state directory and resyncs it from the journal.
//
// # Quotes and their trust
//
// Quote signs PCR 10 (and any other PCR the list extends) of each bank
// with the namespace's attestation key (go-tpm-tools' ECC P-256 AK
// template, persisted at 0x81008F00 in the swtpm) and the verifier's nonce;
// the Bundle carries the quotes, the key, the PCR values and the binary
// list. Verify checks it offline and says what failed (see the Err*
// values). Where the attestation key's trust comes from:
//
//   - pinned per namespace (WithTrustedAK, `imafs verify --ak`): trust on
//     first use of the key a bundle carries (`imafs verify --ak-out`);
//   - bound by the host TPM (SWTPMOptions.Host, WithTrustedHostAK,
//     `imafs verify --host-ak`): the host's attestation key quotes the
//     host's PCRs 0-9 with extraData naming the namespace ID and its key
//     (HostAttester), so one pinned host key tells every namespace's
//     quotes apart. Trusting the host key itself (EK certificate chain,
//     credential activation) is left to the deployment, as for any TPM.
//
// Without either, a bundle proves only self-consistency: some TPM-shaped
// key signed these PCRs and this list with the nonce. The key lives in a
// software TPM run by the imafs daemon, so a bundle proves what the daemon
// recorded for the namespace, no more.
//
// # The host TPM
//
// OpenHost opens /dev/tpmrm0 or a swtpm socket (the daemon's --tpm option);
// BootAggregate and KernelBootAggregate compute IMA's boot_aggregate from it
// as the kernel does, and NewHostAttester makes the host attestation key
// that binds namespace keys.
package vtpm
