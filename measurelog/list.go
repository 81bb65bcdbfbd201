package measurelog

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// Format selects a rendering of a list.
type Format int

// Renderings of a list.
const (
	ASCII  Format = iota // ascii_runtime_measurements[_<algo>]
	Binary               // binary_runtime_measurements[_<algo>]
)

func (f Format) String() string {
	switch f {
	case ASCII:
		return "ascii"
	case Binary:
		return "binary"
	}
	return fmt.Sprintf("format(%d)", int(f))
}

const (
	chunkShift = 10
	chunkSize  = 1 << chunkShift // entries per chunk
	slabSize   = 64 << 10        // bytes per record slab
)

// chunk holds chunkSize entries: their packed records and, per rendering,
// the byte offset at which each entry's rendering ends. A chunk is never
// moved or resized, and a slot is written once before it is published, so
// readers use it without locks.
type chunk struct {
	recs [chunkSize][]byte
	ends []int64 // ends[i*nrend+r]: end offset of entry i in rendering r
}

// List is a per-namespace measurement list: append-only, one writer, many
// concurrent readers; a reader at byte offset X of any rendering always
// sees the same bytes.
//
// Each entry is kept once, packed (template name, PCR, template digests of
// every bank, template data), plus one end offset per rendering (ascii and
// binary of every bank). Readers find the entry containing an offset by
// binary search and render only the entries they read; they take no lock,
// so reading never blocks appending. Memory per entry is its template data
// and digests plus a few dozen bytes (see BenchmarkListMemory).
type List struct {
	banks []Algo
	nrend int
	doff  []int // doff[b]: offset of bank b's digest in a record's digests; doff[len(banks)]: their size

	lastT atomic.Pointer[compiled] // template of the last record parsed: most lists use one

	count atomic.Int64 // published entries
	dir   atomic.Pointer[[]*chunk]

	viol atomic.Int64

	mu     sync.Mutex // writer state below
	slab   []byte
	pcrs   *PCRs
	folded int      // entries extended into pcrs (foldPCRs)
	seen   dupTable // duplicate rule: (pcr, sha1 digest) -> entry index
	notify chan struct{}
}

// NewList returns an empty list keeping banks; it always keeps SHA1 and
// SHA256. Algorithms that are not PCR banks are ignored.
func NewList(banks ...Algo) *List {
	bs := []Algo{SHA1, SHA256}
	for _, b := range banks {
		if b.IsBank() && !slices.Contains(bs, b) {
			bs = append(bs, b)
		}
	}
	slices.Sort(bs)
	l := &List{banks: bs, nrend: 2 * len(bs), pcrs: NewPCRs(bs...)}
	l.doff = make([]int, len(bs)+1)
	for i, b := range bs {
		l.doff[i+1] = l.doff[i] + b.Size()
	}
	dir := []*chunk{}
	l.dir.Store(&dir)
	return l
}

// Banks returns the banks of l, in Algo order.
func (l *List) Banks() []Algo { return append([]Algo(nil), l.banks...) }

func (l *List) bankIndex(bank Algo) int {
	for i, b := range l.banks {
		if b == bank {
			return i
		}
	}
	return -1
}

// rendering returns the index of (f, bank) among the renderings.
func (l *List) rendering(f Format, bank Algo) (int, error) {
	bi := l.bankIndex(bank)
	if bi < 0 {
		return 0, fmt.Errorf("list has no %s bank", bank)
	}
	switch f {
	case ASCII:
		return 2 * bi, nil
	case Binary:
		return 2*bi + 1, nil
	}
	return 0, fmt.Errorf("unknown list format %d", int(f))
}

// Record layout: pcr u32 | flags u8 | namelen u8 | name | digests of every
// bank (absent for violations) | template data ((u32 len + data) per field).
const flagViolation = 1

type record struct {
	pcr       uint32
	violation bool
	t         *compiled
	digests   []byte
	fields    [][]byte
}

func (l *List) digestOffset(bank int) int { return l.doff[bank] }

// template returns the template a record names: the last one found when
// it is the same (no map lookup), else a lookup.
func (l *List) template(name []byte) *compiled {
	if t := l.lastT.Load(); t != nil && t.name == string(name) {
		return t
	}
	t := templates[string(name)] // no allocation for builtin templates
	if t == nil {
		t, _ = lookup(string(name))
	}
	if t == nil {
		return &compiled{name: string(name)}
	}
	l.lastT.Store(t)
	return t
}

func (l *List) parse(rec []byte, fields [][]byte) record {
	r := record{pcr: binary.LittleEndian.Uint32(rec), violation: rec[4]&flagViolation != 0}
	nl := int(rec[5])
	name := rec[6 : 6+nl]
	r.t = l.template(name)
	p := 6 + nl
	if !r.violation {
		n := l.digestOffset(len(l.banks))
		r.digests = rec[p : p+n]
		p += n
	}
	td := rec[p:]
	for len(td) >= 4 {
		n := binary.LittleEndian.Uint32(td)
		fields = append(fields, td[4:4+n:4+n])
		td = td[4+n:]
	}
	r.fields = fields
	return r
}

func (l *List) digest(r *record, bank int, scratch []byte) []byte {
	size := l.banks[bank].Size()
	if r.violation {
		return scratch[:size] // caller passes zeros
	}
	o := l.digestOffset(bank)
	return r.digests[o : o+size]
}

var zeros [64]byte

// render appends entry rendering rend of a packed record.
func (l *List) render(dst, rec []byte, rend int) []byte {
	var fa [16][]byte
	r := l.parse(rec, fa[:0])
	bank := rend / 2
	d := l.digest(&r, bank, zeros[:])
	if rend%2 == 0 {
		return appendASCII(dst, r.pcr, r.t, r.fields, d)
	}
	return appendBinary(dst, r.pcr, r.t, r.fields, d)
}

// Append adds e at the end of the list and extends the PCRs, unless the
// kernel's duplicate rule drops it: an entry whose template digest and PCR
// equal those of an earlier non-violation entry is not added again, and
// Append returns false. A violation entry is always added, extends the PCR
// with 0xff.. and counts in Violations. An entry no kernel list could
// hold (PCR >= NumPCRs, template name longer than 255 bytes) is not added
// either. Append is safe to call concurrently, though a list normally has
// one writer.
func (l *List) Append(e *Entry) bool {
	t := e.compiled()
	if len(t.name) > 255 || e.PCR >= NumPCRs {
		return false // cannot be rendered as a kernel record
	}
	var dbuf [2 * (20 + 32 + 48 + 64)]byte
	digests := dbuf[:0]
	if !e.Violation {
		for _, b := range l.banks {
			digests = e.digestInto(digests, t.ima, b)
		}
	}
	// Rendered sizes in the first bank; other banks differ only in the
	// digest's size (raw in binary, hex in ascii).
	var scratch [1024]byte
	asciiLen := len(appendASCII(scratch[:0], e.PCR, t, e.Fields, zeros[:l.banks[0].Size()])) - 2*l.banks[0].Size()
	binLen := binaryLen(t, e.Fields)
	var key uint64
	var fullKey []byte
	if !e.Violation {
		fullKey = binary.LittleEndian.AppendUint32(digests[:SHA1.Size():SHA1.Size()], e.PCR)
		key = binary.LittleEndian.Uint64(fullKey) ^ uint64(e.PCR)<<32
	}
	recLen := 6 + len(t.name) + len(digests) + templateDataLen(e.Fields)

	l.mu.Lock()
	defer l.mu.Unlock()
	n := int(l.count.Load())
	if !e.Violation {
		if l.isDuplicate(key, fullKey) {
			return false
		}
	}
	rec := l.alloc(recLen)
	binary.LittleEndian.PutUint32(rec, e.PCR)
	if e.Violation {
		rec[4] = flagViolation
	}
	rec[5] = byte(len(t.name))
	p := 6 + copy(rec[6:], t.name)
	p += copy(rec[p:], digests)
	appendTemplateData(rec[p:p], e.Fields)

	dir := *l.dir.Load()
	ci, si := n>>chunkShift, n&(chunkSize-1)
	if ci == len(dir) {
		nd := make([]*chunk, len(dir)+1, len(dir)+1)
		copy(nd, dir)
		nd[ci] = &chunk{ends: make([]int64, chunkSize*l.nrend)}
		l.dir.Store(&nd)
		dir = nd
	}
	c := dir[ci]
	c.recs[si] = rec
	for r := 0; r < l.nrend; r++ {
		prev := int64(0)
		if n > 0 {
			prev = l.end(dir, n-1, r)
		}
		size := l.banks[r/2].Size()
		if r%2 == 0 {
			c.ends[si*l.nrend+r] = prev + int64(asciiLen+2*size)
		} else {
			c.ends[si*l.nrend+r] = prev + int64(binLen+size)
		}
	}
	// The PCRs are extended when they are asked for (foldPCRs).
	if e.Violation {
		l.viol.Add(1)
	} else {
		l.remember(key, fullKey, n)
	}
	l.count.Store(int64(n + 1))
	if l.notify != nil {
		close(l.notify)
		l.notify = nil
	}
	return true
}

// binaryLen returns the size of appendBinary's record without its digest.
func binaryLen(t *compiled, fields [][]byte) int {
	n := 4 + 4 + len(t.name)
	if !t.ima {
		return n + 4 + templateDataLen(fields)
	}
	for i, f := range fields {
		if i == 0 {
			n += len(f)
		} else {
			n += 4 + len(cString(f))
		}
	}
	return n
}

// Reserve prepares an empty list for about n appends (a journal's
// replay): the duplicate rule's table is sized once instead of growing.
func (l *List) Reserve(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen.reserve(n)
}

// isDuplicate reports whether (pcr, sha1 template digest) was seen; the
// table finds candidates by 64 bits of it, the records decide.
func (l *List) isDuplicate(key uint64, full []byte) bool {
	dir := *l.dir.Load()
	return l.seen.find(key, func(i int) bool { return l.sameKey(dir, i, full) })
}

func (l *List) remember(key uint64, full []byte, n int) { l.seen.insert(key, n) }

// sameKey reports whether entry i is a non-violation entry with the
// (sha1 digest, pcr) of full.
func (l *List) sameKey(dir []*chunk, i int, full []byte) bool {
	rec := l.rec(dir, i)
	if rec[4]&flagViolation != 0 {
		return false
	}
	p := 6 + int(rec[5]) // sha1 is the first bank
	return binary.LittleEndian.Uint32(full[SHA1.Size():]) == binary.LittleEndian.Uint32(rec) &&
		bytes.Equal(full[:SHA1.Size()], rec[p:p+SHA1.Size()])
}

// alloc returns n bytes of record storage. Records are carved from shared
// slabs; a slab's bytes are never rewritten once handed out.
func (l *List) alloc(n int) []byte { return carve(&l.slab, n, slabSize) }

func (l *List) rec(dir []*chunk, i int) []byte {
	return dir[i>>chunkShift].recs[i&(chunkSize-1)]
}

func (l *List) end(dir []*chunk, i, r int) int64 {
	return dir[i>>chunkShift].ends[(i&(chunkSize-1))*l.nrend+r]
}

// Len returns the number of entries, boot_aggregate and violations
// included (runtime_measurements_count).
func (l *List) Len() int { return int(l.count.Load()) }

// Violations returns the number of violation entries (the violations file).
func (l *List) Violations() int64 { return l.viol.Load() }

// Entry returns a copy of entry i, or nil when i is out of range.
func (l *List) Entry(i int) *Entry {
	n := l.Len()
	if i < 0 || i >= n {
		return nil
	}
	rec := l.rec(*l.dir.Load(), i)
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
// has no such bank).
func (l *List) PCR(bank Algo, index int) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.foldPCRs()
	return l.pcrs.Value(bank, index)
}

// PCRs returns a snapshot of every PCR of every bank.
func (l *List) PCRs() *PCRs {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.foldPCRs()
	return l.pcrs.clone()
}

var ones = bytes.Repeat([]byte{0xff}, 64)

// foldPCRs extends the PCRs with the entries appended since the last
// fold, in order, from their records; l.mu is held. Entries are appended
// at every measurement, the PCRs asked for rarely (quotes, a replay's
// check): folding on demand keeps an extend (a hash per bank) per entry
// off the append path, for the same values.
func (l *List) foldPCRs() {
	n := int(l.count.Load())
	if l.folded == n {
		return
	}
	dir := *l.dir.Load()
	for i := l.folded; i < n; i++ {
		rec := l.rec(dir, i)
		pcr := binary.LittleEndian.Uint32(rec)
		viol := rec[4]&flagViolation != 0
		p := 6 + int(rec[5])
		for bi, b := range l.banks {
			if viol {
				l.pcrs.extend(b, pcr, ones[:b.Size()])
			} else {
				l.pcrs.extend(b, pcr, rec[p+l.doff[bi]:p+l.doff[bi+1]])
			}
		}
	}
	l.folded = n
}

// Size returns the byte size of a rendering (0 for a bank the list does not keep).
func (l *List) Size(f Format, bank Algo) int64 {
	r, err := l.rendering(f, bank)
	if err != nil {
		return 0
	}
	n := l.Len()
	if n == 0 {
		return 0
	}
	return l.end(*l.dir.Load(), n-1, r)
}

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
	// First entry whose rendering ends after off.
	i := sort.Search(n, func(i int) bool { return l.end(dir, i, r) > off })
	var scratch [1024]byte
	done := 0
	start := int64(0)
	if i > 0 {
		start = l.end(dir, i-1, r)
	}
	for ; i < n && done < len(p); i++ {
		end := l.end(dir, i, r)
		if off == start && end-start <= int64(len(p)-done) {
			// The whole entry fits: render it in place.
			done += len(l.render(p[done:done:len(p)], l.rec(dir, i), r))
		} else {
			b := l.render(scratch[:0], l.rec(dir, i), r)
			done += copy(p[done:], b[off-start:])
		}
		start, off = end, end
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// Wait returns nil once Len() > n, or ctx's error when it is done first.
func (l *List) Wait(ctx context.Context, n int) error {
	for {
		l.mu.Lock()
		if l.Len() > n {
			l.mu.Unlock()
			return nil
		}
		if l.notify == nil {
			l.notify = make(chan struct{})
		}
		ch := l.notify
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
