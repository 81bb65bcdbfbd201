package measurelog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// A journal-backed list (NewJournalList) keeps no record in memory: an
// entry is its record's offset in the journal (the sha1 bank's binary-list
// record, exactly what Journal and imans write) and its two end offsets.
// Rendering reads the records back with pread (from the page cache, which
// holds the daemon's journal, never a caller's rendering) and computes the
// template digests of banks other than sha1 from the template data. An
// entry is appended only once its record is durable (AppendAt), so a
// reader never reads past what is on disk.

// source is where a journal-backed list reads its records.
type source struct{ r io.ReaderAt }

// NewJournalList returns an empty journal-backed list reading its records
// from r, the journal (an *os.File opened for reading), keeping banks like
// NewList. Entries are added with AppendAt.
func NewJournalList(r io.ReaderAt, banks ...Algo) *List {
	l := NewList(banks...)
	l.src.Store(&source{r: r})
	return l
}

// SetJournal makes l read its records from r from now on: r must hold the
// same bytes as the reader it replaces for every entry of l (the journal
// reopened; a replay reading from memory before the file is final).
func (l *List) SetJournal(r io.ReaderAt) {
	if l.src.Load() == nil {
		panic("measurelog: SetJournal on a list kept in memory")
	}
	l.src.Store(&source{r: r})
}

// IsJournalBacked reports whether l reads its records from a journal.
func (l *List) IsJournalBacked() bool { return l.src.Load() != nil }

// windowSize bounds one read of records from a journal.
const windowSize = 256 << 10

// windows keeps a few window buffers for the readers (a channel, not a
// sync.Pool: a pool is emptied by every collection, and a fresh 256 KiB
// buffer is zeroed before it is read into): at most 8, 2 MiB.
var windows = make(chan *[]byte, 8)

func getWindow() *[]byte {
	select {
	case b := <-windows:
		return b
	default:
		b := make([]byte, windowSize)
		return &b
	}
}

func putWindow(b *[]byte) {
	select {
	case windows <- b:
	default:
	}
}

// recordReader returns the records of a list's entries, in order, for
// one reader: for a journal-backed list it reads them in windows of up to
// windowSize bytes (one pread for many entries), up to entry upto.
type recordReader struct {
	l      *List
	dir    []*chunk
	src    *source
	upto   int
	buf    []byte
	base   int64 // journal offset of buf[0]
	pooled *[]byte
}

// records returns a reader of the records of entries up to upto.
func (l *List) records(dir []*chunk, upto int) recordReader {
	return recordReader{l: l, dir: dir, src: l.src.Load(), upto: upto}
}

func (rs *recordReader) release() {
	if rs.pooled != nil {
		putWindow(rs.pooled)
		rs.pooled, rs.buf = nil, nil
	}
}

// offset returns entry i's record offset in the journal and its length
// (its size in bank 0's, sha1's, binary rendering, which is the record).
func (rs *recordReader) offset(i int) (int64, int64) {
	c := rs.dir[i>>chunkShift]
	si := i & (chunkSize - 1)
	n := c.ends[2*si+1]
	if i > 0 {
		n -= rs.l.end(rs.dir, i-1, 1)
	}
	return c.offs[si], n
}

// get returns entry i's record and whether it is a journal record.
func (rs *recordReader) get(i int) ([]byte, bool, error) {
	if rs.src == nil {
		return rs.l.rec(rs.dir, i), false, nil
	}
	off, n := rs.offset(i)
	if off >= rs.base && off+n <= rs.base+int64(len(rs.buf)) {
		return rs.buf[off-rs.base : off-rs.base+n], true, nil
	}
	// A new window from off: as many of the following records as fit.
	size := n
	for j := i + 1; j < rs.upto && n <= windowSize; j++ {
		o, m := rs.offset(j)
		if o < off || o+m-off > windowSize {
			break
		}
		size = max(size, o+m-off)
	}
	switch {
	case size > 4096 && size <= windowSize:
		if rs.pooled == nil {
			rs.pooled = getWindow()
		}
		rs.buf = (*rs.pooled)[:size]
	case size > int64(cap(rs.buf)) || rs.pooled != nil:
		rs.buf = make([]byte, size) // a record or a few: not a pooled window
	default:
		rs.buf = rs.buf[:size]
	}
	rs.base = off
	if k, err := rs.src.r.ReadAt(rs.buf, off); k < len(rs.buf) {
		rs.buf = rs.buf[:0]
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, true, fmt.Errorf("journal record of entry %d at %d: %w", i, off, err)
	}
	return rs.buf[:n], true, nil
}

var errJournalRecord = errors.New("malformed journal record")

// parseJournal parses a journal record (the sha1 bank's binary-list
// record, splitRecord) written by the daemon and checked at its start:
// bounds are checked, digests are not. Fields are slices of rec. (Locals
// until the end: a record built field by field makes the escape analysis
// move the caller's fields array to the heap, an allocation per rendered
// entry.)
func (l *List) parseJournal(rec []byte, fields [][]byte) (record, error) {
	var r rawRecord
	n, more, err := splitRecord(rec, SHA1.Size(), &r, true)
	if more != nil || err != nil || n != len(rec) {
		return record{}, errJournalRecord
	}
	if r.ima {
		fields = append(fields, r.d, r.n)
	} else {
		for rest := r.td; len(rest) > 0; {
			f, after, ok := nextField(rest)
			if !ok {
				return record{}, errJournalRecord
			}
			fields = append(fields, f)
			rest = after
		}
	}
	return record{pcr: r.pcr, violation: allZero(r.digest), t: l.template(r.name),
		digests: r.digest, td: r.td, journal: true, fields: fields}, nil
}

// asciiLen returns the length of appendASCII's line without its digest,
// computed without rendering it.
func asciiLen(pcr uint32, t *compiled, fields [][]byte) int {
	var nb [20]byte
	n := len(strconv.AppendUint(nb[:0], uint64(pcr), 10)) + 2 + len(t.name) + 1 // pcr, spaces, name, '\n'
	if pcr < 10 {
		n++
	}
	for i, f := range fields {
		n++ // ' '
		if len(f) == 0 {
			continue
		}
		k := kindHex
		if i < len(t.kinds) {
			k = t.kinds[i]
		}
		n += fieldASCIILen(k, f)
	}
	return n
}

// fieldASCIILen is the length of appendFieldASCII's rendering of data.
func fieldASCIILen(k fieldKind, data []byte) int {
	switch k {
	case kindDigestWithAlgo, kindDigestWithTypeAlgo:
		s := cString(data)
		i := bytes.LastIndexByte(s, ':')
		if i < 0 {
			return 2 * len(data)
		}
		n := 0
		if i != 0 {
			n = len(s)
		}
		if i+2 >= len(data) {
			return n
		}
		return n + 2*(len(data)-i-2)
	case kindDigest, kindHex:
		return 2 * len(data)
	case kindString:
		return len(cString(data))
	case kindUint:
		var nb [20]byte
		return len(appendFieldASCII(nb[:0], k, data))
	}
	return 0
}

// replay appends the records of a journal's bytes (data: the file, read
// or mapped) to l, an empty journal-backed list reading from the same
// bytes, checking each as DecodeBinary does (structure, sha1 template
// digest: not for the records within data[:trusted], a sealed prefix); it
// stops at the first record that fails with a *DecodeError
// and returns the number of records read. progress is called after each
// record with the number read and the offset of the next.
func (l *List) replay(data []byte, trusted int, progress func(records, off int)) (int, error) {
	l.Reserve(len(data) / 128) // ~128 bytes a record; the table grows if not
	a := arena{retain: true, reuse: true}
	n := 0
	return walkTrusting(data, trusted, SHA1, &a, func(e *Entry, off int) {
		l.AppendAt(e, int64(off))
		n++
		progress(n, off)
	})
}
