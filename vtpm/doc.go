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
// How the daemon uses it (list-driven, recommended):
//
//	on attach, or at start-up for every journaled namespace (after its
//	List has been rebuilt from the journal):
//	    v, err := vtpm.StartSWTPM(vtpm.SWTPMOptions{ID: id, StateDir: dir, SocketDir: sockDir, List: ns.List})
//	    _, err = v.CatchUp()         // fresh swtpm, PCRs zero: replays the whole list
//	    go v.Follow(ctx, ns.List)    // extends each entry appended later, in list order
//	`imafs quote ID --nonce HEX`:
//	    bundle, err := v.Quote(nonce) // covers exactly the entries extended so far
//	on detach / shutdown:
//	    cancel(ctx); v.Close()        // the state directory stays
//
// Follow keeps the ~0.2 ms swtpm round trip of each extend off the
// measurement's critical path; the TPM always holds a prefix of the list
// and a quote covers exactly that prefix. The synchronous alternative:
// Resync(journaledEntries) after the start, then Extend(e) for every entry
// List.Append accepted, in the same order (under the namespace's record
// lock). Use one style per SWTPM, never both.
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
