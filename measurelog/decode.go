package measurelog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// MaxTemplateDataLen bounds the template data of one record a decoder
// accepts (16 MiB); a larger length field is reported as corruption instead
// of being allocated.
const MaxTemplateDataLen = 16 << 20

// DecodeError reports where and why a binary list stops being decodable.
type DecodeError struct {
	Offset int64  // byte offset of the record that cannot be decoded
	Reason string // what is wrong with it
	// Torn is true when the data simply ends inside the record (a write
	// cut short): everything present is a valid prefix of a record.
	Torn bool
}

func (e *DecodeError) Error() string { return fmt.Sprintf("offset %d: %s", e.Offset, e.Reason) }

// needMore is returned by parseRecord when data ends inside the record;
// need is the total record length known so far.
type needMore struct {
	need int
	what string
}

// arena hands out entries, field slices and field bytes carved from
// shared blocks: two allocations per few hundred entries instead of four
// per entry. A block stays alive while any entry carved from it does.
type arena struct {
	entries []Entry
	fields  [][]byte
	data    []byte
	retain  bool // fields alias the decoded bytes instead of copies
	// reuse hands out the same entry and field slice every time (a
	// replay that is done with each entry before the next).
	reuse bool
	one   Entry
	ones  [][]byte
	// trusted skips the template digest check: the record lies in a
	// sealed journal's prefix (walkRecords sets it per record).
	trusted bool
}

const (
	arenaEntries = 256
	arenaFields  = 1024
	arenaBytes   = 32 << 10
)

func (a *arena) entry() *Entry {
	if a.reuse {
		a.one = Entry{}
		return &a.one
	}
	if len(a.entries) == 0 {
		a.entries = make([]Entry, arenaEntries)
	}
	e := &a.entries[0]
	a.entries = a.entries[1:]
	return e
}

func (a *arena) fieldSlice(n int) [][]byte {
	if a.reuse {
		if cap(a.ones) < n {
			a.ones = make([][]byte, n)
		}
		f := a.ones[:n:n]
		clear(f)
		return f
	}
	if n > arenaFields/8 {
		return make([][]byte, n)
	}
	if len(a.fields) < n {
		a.fields = make([][]byte, arenaFields)
	}
	f := a.fields[:n:n]
	a.fields = a.fields[n:]
	return f
}

func (a *arena) bytes(n int) []byte { return carve(&a.data, n, arenaBytes) }

// carve returns n bytes cut from the front of *slab, starting a new slab
// of size bytes when it has too few; requests above size/4 get their own
// allocation. Bytes handed out are never handed out again.
func carve(slab *[]byte, n, size int) []byte {
	if n > size/4 {
		return make([]byte, n)
	}
	if len(*slab) < n {
		*slab = make([]byte, size)
	}
	b := (*slab)[:n:n]
	*slab = (*slab)[n:]
	return b
}

// parseRecord decodes one record from the beginning of data (splitRecord).
// The entry comes from a (nil: allocated alone) and carries the template
// digest it was checked against. Its fields are copies, unless a.retain:
// then they are slices of data.
func parseRecord(data []byte, bank Algo, a *arena) (*Entry, int, *needMore, error) {
	if a == nil {
		a = &arena{}
	}
	var r rawRecord
	size, more, err := splitRecord(data, bank.Size(), &r, false)
	if more != nil || err != nil {
		return nil, 0, more, err
	}
	t, err := lookup(string(r.name))
	if err != nil {
		return nil, 0, nil, err
	}
	e := a.entry()
	e.PCR, e.Template = r.pcr, t.name
	if r.ima {
		e.Fields = a.fieldSlice(2)
		if a.retain {
			e.Fields[0], e.Fields[1] = r.d, r.n
		} else {
			buf := a.bytes(len(r.d) + len(r.n))
			copy(buf, r.d)
			copy(buf[len(r.d):], r.n)
			e.Fields[0], e.Fields[1] = buf[:len(r.d):len(r.d)], buf[len(r.d):]
		}
	} else if e.Fields, err = splitFields(r.td, len(t.ids), a); err != nil {
		return nil, 0, nil, fmt.Errorf("template %s: %w", t.name, err)
	}
	if err := setTemplateDigest(e, t, &r, bank, a.trusted); err != nil {
		return nil, 0, nil, err
	}
	return e, size, nil, nil
}

// setTemplateDigest sets e's template digest in bank from r, checked against
// the template data unless trusted (a sealed journal's record,
// journalseal.go); an all-zero digest is a violation.
func setTemplateDigest(e *Entry, t *compiled, r *rawRecord, bank Algo, trusted bool) error {
	switch {
	case allZero(r.digest):
		e.Violation = true
	case trusted:
		e.sums.set(bank, r.digest)
	default:
		var buf [64]byte
		var want []byte
		if r.td != nil {
			want = bank.appendSum(buf[:0], r.td) // the template data as hashed
		} else {
			want = templateDigest(buf[:0], t.ima, e.Fields, bank)
		}
		if !bytes.Equal(want, r.digest) {
			return fmt.Errorf("template digest %x does not match the template data (%s %x)", r.digest, bank, want)
		}
		e.sums.set(bank, want)
	}
	return nil
}

// splitFields splits template data into its n fields: slices of td if
// a.retain, else copies sharing one buffer.
func splitFields(td []byte, n int, a *arena) ([][]byte, error) {
	var la [16]int
	lens := la[:0]
	rest := td
	total := 0
	for i := 0; i < n; i++ {
		f, after, ok := nextField(rest)
		if !ok {
			if len(rest) < 4 {
				return nil, fmt.Errorf("template data ends in field %d's length (%d fields expected)", i, n)
			}
			return nil, fmt.Errorf("field %d claims %d bytes, %d left in the template data", i, binary.LittleEndian.Uint32(rest), len(rest)-4)
		}
		lens = append(lens, len(f))
		total += len(f)
		rest = after
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d bytes left after the template's %d fields", len(rest), n)
	}
	var buf []byte
	if !a.retain {
		buf = a.bytes(total)
	}
	fields := a.fieldSlice(n)
	p := 0
	rest = td
	for i, l := range lens {
		rest = rest[4:]
		switch {
		case l == 0:
		case a.retain:
			fields[i] = rest[:l:l]
		default:
			copy(buf[p:], rest[:l])
			fields[i] = buf[p : p+l : p+l]
		}
		p += l
		rest = rest[l:]
	}
	return fields, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func checkBank(bank Algo) error {
	if !bank.IsBank() {
		return fmt.Errorf("%s is not a PCR bank algorithm", bank)
	}
	return nil
}

// DecodeBinary reads a binary list whose template digests are of bank
// (binary_runtime_measurements and _sha1: SHA1; _sha256: SHA256; ...). It
// checks every template digest against the template data (all-zero digests
// are violations). On a torn or corrupt tail it returns the entries before
// it and a *DecodeError. It never panics, and it allocates no more than
// the entries it returns.
func DecodeBinary(data []byte, bank Algo) ([]*Entry, error) {
	return decodeBinary(data, bank, false)
}

// decodeBinary is DecodeBinary; with retain the entries' fields are slices
// of data (no copy; data must not change while they live).
func decodeBinary(data []byte, bank Algo, retain bool) ([]*Entry, error) {
	if err := checkBank(bank); err != nil {
		return nil, fmt.Errorf("decode binary list: %w", err)
	}
	var entries []*Entry
	if retain {
		// A journal of our own: room for records of ~100 bytes up front
		// instead of a growing copy of a million pointers.
		entries = make([]*Entry, 0, len(data)/100)
	}
	a := arena{retain: retain}
	_, err := walkRecords(data, bank, &a, func(e *Entry, _ int) { entries = append(entries, e) })
	return entries, err
}

// walkRecords decodes the records of data in order, calling visit with
// each entry (from a) and its offset. It returns the number of records and,
// at a torn or corrupt one, a *DecodeError (DecodeBinary's rules).
func walkRecords(data []byte, bank Algo, a *arena, visit func(e *Entry, off int)) (int, error) {
	return walkTrusting(data, 0, bank, a, visit)
}

// walkTrusting is walkRecords trusting the template digests of the
// records that lie wholly in data[:trusted] (a sealed prefix).
func walkTrusting(data []byte, trusted int, bank Algo, a *arena, visit func(e *Entry, off int)) (int, error) {
	off, count := 0, 0
	for off < len(data) {
		a.trusted = off < trusted
		e, n, more, err := parseRecord(data[off:], bank, a)
		if a.trusted && err == nil && more == nil && off+n > trusted {
			a.trusted = false // straddles the seal: checked
			e, n, more, err = parseRecord(data[off:], bank, a)
		}
		if more != nil {
			if next := validRecordAfter(data, off, bank); next >= 0 {
				// Not a write cut short: a length field points past
				// the end while a whole record follows (corruption).
				return count, &DecodeError{Offset: int64(off),
					Reason: fmt.Sprintf("record %d: %s claims %d bytes, %d present, but a valid record follows at offset %d", count, more.what, more.need, len(data)-off, next)}
			}
			return count, &DecodeError{Offset: int64(off), Torn: true,
				Reason: fmt.Sprintf("record %d torn: %s needs %d bytes, %d present", count, more.what, more.need, len(data)-off)}
		}
		if err != nil {
			return count, &DecodeError{Offset: int64(off), Reason: fmt.Sprintf("record %d: %v", count, err)}
		}
		visit(e, off)
		count++
		off += n
	}
	return count, nil
}

// validRecordAfter returns the offset of the first whole, valid record
// that starts after off (digest checked against its data), or -1. A torn
// tail is the prefix of one record: nothing valid can start inside it
// unless a corrupt length field made a record swallow its successors.
func validRecordAfter(data []byte, off int, bank Algo) int {
	for p := off + 1; p+4 <= len(data); p++ {
		if data[p+1]|data[p+2]|data[p+3] != 0 || data[p] >= NumPCRs {
			continue // not a pcr 0..23: the cheap common case
		}
		if e, _, more, err := parseRecord(data[p:], bank, nil); e != nil && more == nil && err == nil {
			return p
		}
	}
	return -1
}

// Decoder reads a binary list entry by entry from a stream, for tailing a
// kernel's (or a daemon's) list while it grows.
type Decoder struct {
	r     io.Reader
	bank  Algo
	buf   []byte // unconsumed bytes
	off   int64  // stream offset of buf[0]
	count int
	err   error // sticky corruption error
	arena arena
}

// NewDecoder returns a Decoder reading records of bank from r.
func NewDecoder(r io.Reader, bank Algo) *Decoder { return &Decoder{r: r, bank: bank} }

// Offset returns the stream offset just after the last entry returned.
func (d *Decoder) Offset() int64 { return d.off }

// readChunk bounds how much a Decoder reads ahead at once.
const readChunk = 64 << 10

// Next returns the next entry. At a clean end of the stream it returns
// io.EOF. When the stream ends inside a record it returns a *DecodeError
// with Torn set and keeps the partial record, so a later call continues
// once the reader has more data (a growing file); not seeing the rest, it
// cannot tell a length field that points past the end from a corrupt one,
// which DecodeBinary does. Corruption is a
// *DecodeError that every later call returns again.
func (d *Decoder) Next() (*Entry, error) {
	if d.err != nil {
		return nil, d.err
	}
	if err := checkBank(d.bank); err != nil {
		d.err = fmt.Errorf("decode binary list: %w", err)
		return nil, d.err
	}
	for {
		if len(d.buf) > 0 {
			e, n, more, err := parseRecord(d.buf, d.bank, &d.arena)
			if err != nil {
				d.err = &DecodeError{Offset: d.off, Reason: fmt.Sprintf("record %d: %v", d.count, err)}
				return nil, d.err
			}
			if more == nil {
				d.buf = d.buf[n:]
				d.off += int64(n)
				d.count++
				if len(d.buf) == 0 {
					d.buf = d.buf[:0:0]
				}
				return e, nil
			}
			if rerr := d.fill(more.need); rerr != nil {
				if rerr == io.EOF {
					return nil, &DecodeError{Offset: d.off, Torn: true,
						Reason: fmt.Sprintf("record %d torn: %s needs %d bytes, %d present", d.count, more.what, more.need, len(d.buf))}
				}
				return nil, fmt.Errorf("decode binary list at offset %d: %w", d.off, rerr)
			}
			continue
		}
		if rerr := d.fill(4); rerr != nil {
			if rerr == io.EOF && len(d.buf) == 0 {
				return nil, io.EOF
			}
			if rerr == io.EOF {
				continue // a partial pcr: parseRecord reports it torn
			}
			return nil, fmt.Errorf("decode binary list at offset %d: %w", d.off, rerr)
		}
	}
}

// fill reads until buf holds at least need bytes, growing it by what
// actually arrives (never by the amount a length field claims). It returns
// io.EOF when the reader ends first.
func (d *Decoder) fill(need int) error {
	for len(d.buf) < need {
		want := need - len(d.buf)
		if want < readChunk {
			want = readChunk
		}
		if want > readChunk {
			want = readChunk
		}
		if cap(d.buf)-len(d.buf) < want {
			nb := make([]byte, len(d.buf), max(2*cap(d.buf), len(d.buf)+want))
			copy(nb, d.buf)
			d.buf = nb
		}
		n, err := d.r.Read(d.buf[len(d.buf) : len(d.buf)+want])
		d.buf = d.buf[:len(d.buf)+n]
		if err != nil {
			if len(d.buf) >= need {
				return nil
			}
			if err == io.EOF {
				return io.EOF
			}
			return err
		}
		if n == 0 {
			return io.EOF // a reader that makes no progress
		}
	}
	return nil
}
