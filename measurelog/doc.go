// Package measurelog implements IMA measurement lists exactly as the Linux
// kernel (6.12) renders them: templates and their fields, entries and their
// per-bank template digests, the ascii and binary list formats, PCR replay,
// an append-only List safe for one writer and many readers, and a Journal
// that makes a list durable.
package measurelog
