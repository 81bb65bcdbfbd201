package measurelog

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"io"
)

var errNotImplemented = errors.New("measurelog: not implemented yet")

// Algo is a hash algorithm as IMA names it.
type Algo uint8

// Hash algorithms.
const (
	SHA1 Algo = iota + 1
	SHA256
	SHA384
	SHA512
)

// ParseAlgo returns the algorithm IMA calls name.
func ParseAlgo(name string) (Algo, error) {
	switch name {
	case "sha1":
		return SHA1, nil
	case "sha256":
		return SHA256, nil
	case "sha384":
		return SHA384, nil
	case "sha512":
		return SHA512, nil
	}
	return 0, fmt.Errorf("parse algo %q: unknown hash algorithm", name)
}

// String returns IMA's name of a.
func (a Algo) String() string {
	switch a {
	case SHA1:
		return "sha1"
	case SHA256:
		return "sha256"
	case SHA384:
		return "sha384"
	case SHA512:
		return "sha512"
	}
	return fmt.Sprintf("algo(%d)", uint8(a))
}

// Size returns the digest size of a in bytes.
func (a Algo) Size() int { return a.New().Size() }

// New returns a new hash of a.
func (a Algo) New() hash.Hash {
	switch a {
	case SHA1:
		return sha1.New()
	case SHA256:
		return sha256.New()
	case SHA384:
		return sha512.New384()
	case SHA512:
		return sha512.New()
	}
	panic("measurelog: unknown algo")
}

// Sum returns the digest of data.
func (a Algo) Sum(data []byte) []byte { h := a.New(); h.Write(data); return h.Sum(nil) }

// Template describes an IMA template.
type Template struct {
	Name   string
	Fields []string
}

// LookupTemplate returns the template called name.
func LookupTemplate(name string) (*Template, error) { return nil, errNotImplemented }

// Measurement is what a source observed; NewEntry renders it through a template.
type Measurement struct {
	FileDigest []byte
	FileAlgo   Algo
	Verity     bool
	Name       string
	Sig        []byte
	Buf        []byte
	Namespace  string
	UID, GID   uint32
	Mode       uint16
}

// Entry is one measurement-list record.
type Entry struct {
	PCR       uint32
	Template  string
	Fields    [][]byte
	Violation bool
}

// NewEntry renders m through template.
func NewEntry(template string, pcr uint32, m Measurement) (*Entry, error) {
	return nil, errNotImplemented
}

// NewViolation returns a violation entry.
func NewViolation(template string, pcr uint32, name string, fileAlgo Algo) (*Entry, error) {
	return nil, errNotImplemented
}

// NewBootAggregate returns the boot_aggregate entry.
func NewBootAggregate(template string, digest []byte, algo Algo) (*Entry, error) {
	return nil, errNotImplemented
}

// TemplateData returns the concatenated (u32 len + data) of all fields.
func (e *Entry) TemplateData() []byte { return nil }

// TemplateDigest returns the template digest in bank.
func (e *Entry) TemplateDigest(bank Algo) []byte { return nil }

// AppendASCII appends one kernel ascii line.
func (e *Entry) AppendASCII(dst []byte, bank Algo) []byte { return dst }

// AppendBinary appends one kernel binary record.
func (e *Entry) AppendBinary(dst []byte, bank Algo) []byte { return dst }

// FileDigest returns the file digest.
func (e *Entry) FileDigest() (algo string, digest []byte, err error) {
	return "", nil, errNotImplemented
}

// Name returns the name field.
func (e *Entry) Name() string { return "" }

// DecodeBinary reads a binary list.
func DecodeBinary(data []byte, bank Algo) ([]*Entry, error) { return nil, errNotImplemented }

// DecodeError reports a torn or corrupt list.
type DecodeError struct {
	Offset int64
	Reason string
}

func (e *DecodeError) Error() string { return fmt.Sprintf("offset %d: %s", e.Offset, e.Reason) }

// Decoder reads a binary list entry by entry.
type Decoder struct {
	r    io.Reader
	bank Algo
}

// NewDecoder returns a streaming decoder.
func NewDecoder(r io.Reader, bank Algo) *Decoder { return &Decoder{r: r, bank: bank} }

// Next returns the next entry.
func (d *Decoder) Next() (*Entry, error) { return nil, errNotImplemented }

// PCRs holds one register file per bank.
type PCRs struct{}

// NewPCRs returns zeroed PCRs.
func NewPCRs(banks ...Algo) *PCRs { return &PCRs{} }

// Extend extends e into every bank.
func (p *PCRs) Extend(e *Entry) {}

// Value returns a PCR value.
func (p *PCRs) Value(bank Algo, index int) []byte { return nil }

// Touched returns PCR indexes extended at least once.
func (p *PCRs) Touched() []int { return nil }

// Replay extends entries into fresh PCRs.
func Replay(entries []*Entry, banks ...Algo) *PCRs { return NewPCRs(banks...) }

// Format selects a rendering of a list.
type Format int

// Renderings.
const (
	ASCII Format = iota
	Binary
)

// List is a per-namespace measurement list.
type List struct{}

// NewList returns an empty list.
func NewList(banks ...Algo) *List { return &List{} }

// Append appends e.
func (l *List) Append(e *Entry) bool { return false }

// Len returns the number of entries.
func (l *List) Len() int { return 0 }

// Violations returns the violation count.
func (l *List) Violations() int64 { return 0 }

// Entry returns entry i.
func (l *List) Entry(i int) *Entry { return nil }

// PCR returns a PCR value.
func (l *List) PCR(bank Algo, index int) []byte { return nil }

// Banks returns the list's banks.
func (l *List) Banks() []Algo { return nil }

// ReadAt reads a rendering.
func (l *List) ReadAt(p []byte, off int64, f Format, bank Algo) (int, error) { return 0, io.EOF }

// Size returns a rendering's size.
func (l *List) Size(f Format, bank Algo) int64 { return 0 }

// Wait returns when Len() > n.
func (l *List) Wait(ctx context.Context, n int) error { return errNotImplemented }

// Journal is an append-only durable file of list records.
type Journal struct{}

// OpenJournal opens (creating) and replays path.
func OpenJournal(path string) (*Journal, []*Entry, error) { return nil, nil, errNotImplemented }

// Append returns once e is durable.
func (j *Journal) Append(e *Entry) error { return errNotImplemented }

// Close closes the journal.
func (j *Journal) Close() error { return nil }
