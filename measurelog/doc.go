// Package measurelog implements IMA measurement lists exactly as the Linux
// kernel (6.12) builds and prints them: templates and their fields, entries
// and their per-bank template digests, the ascii and binary list formats,
// PCR replay, an append-only List that serves many readers while one writer
// appends, and a Journal that makes a list durable.
//
// # Entries
//
// NewEntry renders a Measurement through a template the way IMA's field
// init functions do (security/integrity/ima/ima_template_lib.c), so the
// result is byte-identical to what the kernel would record:
//
//   - Spaces in names become '_' in the field data itself, and therefore in
//     the template digests: ima_write_template_field_data does it for every
//     string field when IMA builds the entry, so NewEntry does it too (tabs
//     and other bytes stay). The same applies to the ns field.
//   - The ima template's "n" field holds at most 255 bytes: a longer path is
//     replaced by the file's own name (the kernel takes the dentry name),
//     or cut to 255 bytes when it has no '/'. n-ng has no limit.
//   - The ima template's "d" field is the 20-byte SHA-1 file digest; its
//     template digest is SHA(d || n zero-padded to 256 bytes), and its
//     binary record has no template data length. For every other template
//     the digest covers each field's (u32 length || data).
//   - "sig" keeps security.ima only when it is a signature (type 0x03 or
//     0x06), else a portable EVM signature (0x05) from Measurement.EVMSig.
//   - iuid, igid and imode are filled only for a file (Measurement.Mode != 0).
//   - xattrnames, xattrlengths and xattrvalues (evm-sig) stay empty.
//
// Templates: ima (d|n), ima-ng (d-ng|n-ng), ima-sig, ima-ngv2, ima-sigv2,
// ima-buf, ima-modsig, evm-sig, any custom format made of known fields
// ("d-ng|n-ng|iuid", printed by its format as the kernel does), and
// imafs's own ima-ns = d-ng|n-ng|ns, whose ns field is the registered
// namespace's label (the imafs container ID) followed by one NUL, rendered
// in ascii as the label, and empty (zero-length) for the host.
//
// A violation (NewViolation) has a zero file digest, an all-zero template
// digest in every bank, and extends its PCR with 0xff..ff. NewBootAggregate
// makes the boot_aggregate entry (all zeros without a TPM).
//
// # Lists
//
// AppendASCII and AppendBinary render an entry's line or record for a bank:
// SHA1 for the legacy files and the *_sha1 files, the bank's algorithm for
// the other *_<algo> files. DecodeBinary and Decoder read binary lists back
// and check every template digest against the data (all-zero means a
// violation); a torn or corrupt tail is reported as a *DecodeError with the
// offset of the record that cannot be read.
//
// List keeps one namespace's entries, applies the kernel's duplicate rule
// (same template digest and PCR as an earlier non-violation entry: not
// added), extends its PCRs, counts violations, and serves every rendering
// through ReadAt at stable offsets without blocking its writer.
//
// Journal is an append-only file of sha1 binary records with group commit;
// OpenJournal replays it, cuts a torn tail (only the last record cut short)
// and quarantines any other damage (the original kept, the valid prefix
// restored: DamageError).
package measurelog
