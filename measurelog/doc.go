// Package measurelog implements IMA measurement lists exactly as the Linux
// kernel (6.12) builds and prints them: templates and their fields, entries
// and their per-bank template digests, the ascii and binary list formats,
// PCR replay, an append-only List that serves many readers while one writer
// appends, and a Journal that makes a list durable.
//
//	e, err := measurelog.NewEntry("ima-ng", 10, measurelog.Measurement{FileDigest: d, FileAlgo: measurelog.SHA256, Name: path})
//	l := measurelog.NewList(measurelog.SHA1, measurelog.SHA256)
//	l.Append(e)
//	n, err := l.ReadAt(buf, off, measurelog.ASCII, measurelog.SHA1)
//
// Invariants:
//   - NewEntry's result is byte-identical to the kernel's entry for the
//     same measurement (field rendering, template digests, both formats).
//   - A List only grows; it applies the kernel's duplicate rule, extends
//     its PCRs, counts violations, and ReadAt offsets are stable while it
//     grows, without blocking the writer.
//   - Decoders check every template digest; a torn or corrupt tail is a
//     *DecodeError with the offset of the first unreadable record.
//   - OpenJournal replays a journal and cuts a torn tail (only the last
//     record cut short); any other damage is quarantined (DamageError).
//
// The kernel's rendering rules, templates (including imafs's ima-ns) and
// violations are described in docs/packages/measurelog.md.
package measurelog
