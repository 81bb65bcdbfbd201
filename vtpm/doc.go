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
// How the daemon uses it:
//
//	on attach (or at start-up for a journaled namespace):
//	    v, err := vtpm.StartSWTPM(vtpm.SWTPMOptions{ID: id, StateDir: dir, List: ns.List})
//	    err = v.Resync(journaledEntries)   // PCRs start at zero: replay the journal
//	for every entry appended to ns.List, in list order, after the journal append:
//	    err = v.Extend(e)
//	for `imafs quote ID --nonce HEX`:
//	    bundle, err := v.Quote(nonce)
//	on detach / shutdown:
//	    v.Close()                          // the state directory stays
//
// A swtpm restart (daemon restart) resets every PCR (TPM2_Startup(CLEAR));
// the persistent state, and with it the attestation key, survives. Until
// Resync has run, Extend and Quote fail with ErrNotSynced. swtpm runs with
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
// values). The attestation key is trusted only as far as the verifier pins
// it (WithTrustedAK): it lives in a software TPM run by the imafs daemon, so
// a bundle proves what the daemon's vTPM for that namespace recorded, no
// more. Having the host TPM certify each namespace's attestation key
// (TPM2_Certify by a host AK, with the namespace ID as qualifying data) is
// the way to chain it to hardware; not done yet.
//
// # The host TPM
//
// OpenHost opens /dev/tpmrm0 or a swtpm socket (the daemon's --tpm option)
// and BootAggregate computes IMA's boot_aggregate from it as the kernel
// does.
package vtpm
