package measurelog

import (
	"bytes"
	"fmt"
	"io"
	"sort"
)

// The reading side of List: renderings, entries and PCRs, from records
// kept in memory or read back from the journal (recordReader).

// ReadAt reads len(p) bytes of a rendering starting at off, like
// io.ReaderAt: it returns io.EOF when it reads fewer bytes because the
// rendering ends (or off is at or past its end). The bytes at an offset
// never change once they exist.
func (l *List) ReadAt(p []byte, off int64, f Format, bank Algo) (int, error) {
	r, err := l.rendering(f, bank)
	if err != nil {
		return 0, fmt.Errorf("read %s list at %d: %w", f, off, err)
	}
	if off < 0 {
		return 0, fmt.Errorf("read %s list: negative offset %d", f, off)
	}
	n := l.Len()
	dir := *l.dir.Load()
	if n == 0 || off >= l.end(dir, n-1, r) {
		return 0, io.EOF
	}
	// First entry whose rendering ends after off, and the one the read ends in.
	i := sort.Search(n, func(i int) bool { return l.end(dir, i, r) > off })
	last := sort.Search(n, func(i int) bool { return l.end(dir, i, r) >= off+int64(len(p)) })
	rs := l.records(dir, min(last+1, n))
	defer rs.release()
	var scratch [1024]byte
	done := 0
	start := int64(0)
	if i > 0 {
		start = l.end(dir, i-1, r)
	}
	for ; i < n && done < len(p); i++ {
		end := l.end(dir, i, r)
		rec, journal, err := rs.get(i)
		if err != nil {
			return done, fmt.Errorf("read %s list at %d: %w", f, off, err)
		}
		if off == start && end-start <= int64(len(p)-done) {
			// The whole entry fits: render it in place.
			b, err := l.render(p[done:done:len(p)], rec, journal, r)
			if err != nil {
				return done, fmt.Errorf("read %s list at %d: entry %d: %w", f, off, i, err)
			}
			done += len(b)
		} else {
			b, err := l.render(scratch[:0], rec, journal, r)
			if err != nil {
				return done, fmt.Errorf("read %s list at %d: entry %d: %w", f, off, i, err)
			}
			done += copy(p[done:], b[off-start:])
		}
		start, off = end, end
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// Entry returns a copy of entry i, or nil when i is out of range (or its
// record cannot be read from the journal).
func (l *List) Entry(i int) *Entry {
	n := l.Len()
	if i < 0 || i >= n {
		return nil
	}
	rs := l.records(*l.dir.Load(), i+1)
	defer rs.release()
	rec, journal, err := rs.get(i)
	if err != nil {
		return nil
	}
	if journal {
		e, _, _, err := parseRecord(rec, SHA1, nil) // copies the fields
		if err != nil || e == nil {
			return nil
		}
		return e
	}
	r := l.parse(rec, nil)
	e := &Entry{PCR: r.pcr, Template: r.t.name, Violation: r.violation, Fields: make([][]byte, len(r.fields))}
	for j, f := range r.fields {
		if len(f) > 0 {
			e.Fields[j] = append([]byte(nil), f...)
		}
	}
	return e
}

// PCR returns the current value of PCR index in bank (nil when the list
// has no such bank, or a journal-backed list cannot read its journal).
func (l *List) PCR(bank Algo, index int) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.foldPCRs() != nil {
		return nil
	}
	return l.pcrs.Value(bank, index)
}

// PCRs returns a snapshot of every PCR of every bank (nil when a
// journal-backed list cannot read its journal).
func (l *List) PCRs() *PCRs {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.foldPCRs() != nil {
		return nil
	}
	return l.pcrs.clone()
}

var ones = bytes.Repeat([]byte{0xff}, 64)

// foldPCRs extends the PCRs with the entries appended since the last
// fold, in order, from their records; l.mu is held. Entries are appended
// at every measurement, the PCRs asked for rarely (quotes, a replay's
// check): folding on demand keeps an extend (a hash per bank) per entry
// off the append path, for the same values. A journal-backed list reads
// its records back (and computes the digests of banks other than sha1).
func (l *List) foldPCRs() error {
	n := int(l.count.Load())
	if l.folded == n {
		return nil
	}
	dir := *l.dir.Load()
	rs := l.records(dir, n)
	defer rs.release()
	var fa [16][]byte
	var buf [64]byte
	for i := l.folded; i < n; i++ {
		rec, journal, err := rs.get(i)
		if err != nil {
			return err
		}
		r, err := l.parseAny(rec, journal, fa[:0])
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		for bi, b := range l.banks {
			if r.violation {
				l.pcrs.extend(b, r.pcr, ones[:b.Size()])
			} else {
				l.pcrs.extend(b, r.pcr, l.digest(&r, bi, &buf))
			}
		}
		l.folded = i + 1
	}
	return nil
}
