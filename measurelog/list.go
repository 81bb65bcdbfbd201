package measurelog

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
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
	firstChunk = 16              // slots of a list's first chunk (doubled as it fills)
	slabSize   = 64 << 10        // bytes per record slab
)

// chunk holds up to chunkSize entries: where each one's record is (a
// packed record in memory, or its offset in the journal) and the byte
// offsets at which it ends in the first bank's ascii and binary
// renderings (the other banks' differ by the digests' sizes only:
// List.end). A slot is written once before it is published, so readers
// use it without locks. The first chunk starts small and is replaced by
// a copy twice its size when full (a list of a few entries, a container
// just attached, costs a few hundred bytes, not a full chunk); the
// others are allocated full.
type chunk struct {
	recs [][]byte // in memory: entry i's packed record
	offs []int64  // journal-backed: entry i's record offset in the journal
	ends []int64  // ends[2*i]: end of entry i in bank 0's ascii, ends[2*i+1] in its binary rendering
}

func (l *List) newChunk(slots int) *chunk {
	c := &chunk{ends: make([]int64, 2*slots)}
	if l.src.Load() != nil {
		c.offs = make([]int64, slots)
	} else {
		c.recs = make([][]byte, slots)
	}
	return c
}

func (c *chunk) slots() int { return len(c.ends) / 2 }

// List is a per-namespace measurement list: append-only, one writer, many
// concurrent readers; a reader at byte offset X of any rendering always
// sees the same bytes.
//
// A list made by NewList keeps each entry in memory, packed (template
// name, PCR, template digests of every bank, template data), plus two
// end offsets. A journal-backed list (NewJournalList, filelist.go) keeps
// only each entry's offset in its journal and the two end offsets (24
// bytes an entry) and reads the records from the journal when it renders
// them. Readers find the entry containing an offset by binary search and
// render only the entries they read; they take no lock, so reading never
// blocks appending (see BenchmarkListMemory).
type List struct {
	banks []Algo
	nrend int
	doff  []int   // doff[b]: offset of bank b's digest in a record's digests; doff[len(banks)]: their size
	extra []int64 // extra[r]: what rendering r adds per entry to bank 0's (a larger digest)

	src atomic.Pointer[source] // journal-backed: where the records are (nil: in memory)

	lastT atomic.Pointer[compiled] // template of the last record parsed: most lists use one

	count atomic.Int64 // published entries
	dir   atomic.Pointer[[]*chunk]

	viol atomic.Int64

	mu       sync.Mutex // writer state below
	slab     []byte
	slabNext int // size of the next slab
	pcrs     *PCRs
	folded   int      // entries extended into pcrs (foldPCRs)
	seen     dupTable // duplicate rule: (pcr, sha1 digest) -> entry index
	notify   chan struct{}
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
	l.extra = make([]int64, l.nrend)
	for i, b := range bs {
		l.doff[i+1] = l.doff[i] + b.Size()
		l.extra[2*i] = int64(2 * (b.Size() - bs[0].Size()))
		l.extra[2*i+1] = int64(b.Size() - bs[0].Size())
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
	digests   []byte // packed: every bank's; journal: the sha1 digest
	td        []byte // journal, not ima: the template data as hashed
	journal   bool
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

// parseAny parses a record as the list keeps it: packed in memory, or a
// journal's binary-list record.
func (l *List) parseAny(rec []byte, journal bool, fields [][]byte) (record, error) {
	if journal {
		return l.parseJournal(rec, fields)
	}
	return l.parse(rec, fields), nil
}

// digest returns r's template digest in bank (an index into l.banks):
// zeros for a violation, computed into buf when a journal record lacks it.
func (l *List) digest(r *record, bank int, buf *[64]byte) []byte {
	b := l.banks[bank]
	switch {
	case r.violation:
		return zeros[:b.Size()]
	case !r.journal:
		o := l.digestOffset(bank)
		return r.digests[o : o+b.Size()]
	case b == SHA1:
		return r.digests
	case r.td != nil:
		return b.appendSum(buf[:0], r.td)
	}
	return templateDigest(buf[:0], r.t.ima, r.fields, b)
}

var zeros [64]byte

// render appends entry rendering rend of a record.
func (l *List) render(dst, rec []byte, journal bool, rend int) ([]byte, error) {
	var fa [16][]byte
	r, err := l.parseAny(rec, journal, fa[:0])
	if err != nil {
		return dst, err
	}
	var buf [64]byte
	d := l.digest(&r, rend/2, &buf)
	if rend%2 == 0 {
		return appendASCII(dst, r.pcr, r.t, r.fields, d), nil
	}
	return appendBinary(dst, r.pcr, r.t, r.fields, d), nil
}

// Append adds e at the end of the list and extends the PCRs, unless the
// kernel's duplicate rule drops it: an entry whose template digest and PCR
// equal those of an earlier non-violation entry is not added again, and
// Append returns false. A violation entry is always added, extends the PCR
// with 0xff.. and counts in Violations. An entry no kernel list could
// hold (PCR >= NumPCRs, template name longer than 255 bytes) is not added
// either. Append is safe to call concurrently, though a list normally has
// one writer. A journal-backed list takes AppendAt instead.
func (l *List) Append(e *Entry) bool { return l.AppendAt(e, -1) }

// AppendAt is Append for a journal-backed list: off is the offset in the
// journal of e's record (e.AppendBinary(nil, SHA1)), which must be durable
// already. A list in memory ignores off.
func (l *List) AppendAt(e *Entry, off int64) bool {
	t := e.compiled()
	if len(t.name) > 255 || e.PCR >= NumPCRs {
		return false // cannot be rendered as a kernel record
	}
	fileBacked := l.src.Load() != nil
	if fileBacked && off < 0 {
		panic("measurelog: Append on a journal-backed list: use AppendAt with the record's offset")
	}
	var dbuf [2 * (20 + 32 + 48 + 64)]byte
	digests := dbuf[:0]
	if !e.Violation {
		if fileBacked {
			digests = e.digestInto(digests, t.ima, SHA1) // the journal has the rest
		} else {
			for _, b := range l.banks {
				digests = e.digestInto(digests, t.ima, b)
			}
		}
	}
	// Rendered sizes in the first bank (SHA1); other banks differ only in
	// the digest's size (raw in binary, hex in ascii).
	asciiLen := asciiLen(e.PCR, t, e.Fields) + 2*SHA1.Size()
	binLen := binaryLen(t, e.Fields) + SHA1.Size()
	var key uint64
	var fullKey []byte
	if !e.Violation {
		fullKey = binary.LittleEndian.AppendUint32(digests[:SHA1.Size():SHA1.Size()], e.PCR)
		key = binary.LittleEndian.Uint64(fullKey) ^ uint64(e.PCR)<<32
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	n := int(l.count.Load())
	if !e.Violation && l.isDuplicate(key, fullKey) {
		return false
	}
	c, si := l.slot(n)
	if fileBacked {
		c.offs[si] = off
	} else {
		c.recs[si] = l.pack(e, t, digests)
	}
	var prevA, prevB int64 // bank 0's renderings: l.extra[0] = l.extra[1] = 0
	if n > 0 {
		prevA, prevB = l.end(*l.dir.Load(), n-1, 0), l.end(*l.dir.Load(), n-1, 1)
	}
	c.ends[2*si], c.ends[2*si+1] = prevA+int64(asciiLen), prevB+int64(binLen)
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

// slot returns the chunk and slot of entry n, the next one (l.mu held):
// a new chunk when n starts one, a copy twice the size of the first
// chunk when it is full. A chunk is published (l.dir) before the count.
func (l *List) slot(n int) (*chunk, int) {
	dir := *l.dir.Load()
	ci, si := n>>chunkShift, n&(chunkSize-1)
	switch {
	case ci == len(dir):
		slots := chunkSize
		if ci == 0 {
			slots = firstChunk
		}
		nd := make([]*chunk, len(dir)+1, len(dir)+1)
		copy(nd, dir)
		nd[ci] = l.newChunk(slots)
		l.dir.Store(&nd)
		return nd[ci], si
	case si == dir[ci].slots():
		old := dir[ci]
		c := l.newChunk(min(2*old.slots(), chunkSize))
		copy(c.recs, old.recs)
		copy(c.offs, old.offs)
		copy(c.ends, old.ends)
		nd := append([]*chunk(nil), dir...)
		nd[ci] = c
		l.dir.Store(&nd)
		return c, si
	}
	return dir[ci], si
}

// pack returns e's packed record, carved from the list's slabs.
func (l *List) pack(e *Entry, t *compiled, digests []byte) []byte {
	rec := l.alloc(6 + len(t.name) + len(digests) + templateDataLen(e.Fields))
	binary.LittleEndian.PutUint32(rec, e.PCR)
	if e.Violation {
		rec[4] = flagViolation
	}
	rec[5] = byte(len(t.name))
	p := 6 + copy(rec[6:], t.name)
	p += copy(rec[p:], digests)
	appendTemplateData(rec[p:p], e.Fields)
	return rec
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
	rs := l.records(dir, i+1)
	defer rs.release()
	rec, journal, err := rs.get(i)
	if err != nil {
		return false // unreadable: not known to be the same
	}
	var d []byte
	if journal {
		if len(rec) < 4+SHA1.Size() || allZero(rec[4:4+SHA1.Size()]) {
			return false
		}
		d = rec[4 : 4+SHA1.Size()]
	} else {
		if rec[4]&flagViolation != 0 {
			return false
		}
		p := 6 + int(rec[5]) // sha1 is the first bank
		d = rec[p : p+SHA1.Size()]
	}
	return binary.LittleEndian.Uint32(full[SHA1.Size():]) == binary.LittleEndian.Uint32(rec) &&
		bytes.Equal(full[:SHA1.Size()], d)
}

// alloc returns n bytes of record storage. Records are carved from shared
// slabs; a slab's bytes are never rewritten once handed out. A list's
// first slab is small (1 KiB) and each next one twice the last, up to
// slabSize: a list of a few entries keeps a few KiB, not 64.
func (l *List) alloc(n int) []byte {
	if len(l.slab) < n && n <= slabSize/4 {
		l.slabNext = min(max(2*l.slabNext, 1<<10), slabSize)
		for l.slabNext < n {
			l.slabNext *= 2
		}
		l.slab = make([]byte, l.slabNext)
	}
	return carve(&l.slab, n, slabSize)
}

func (l *List) rec(dir []*chunk, i int) []byte {
	return dir[i>>chunkShift].recs[i&(chunkSize-1)]
}

// end returns where entry i ends in rendering r: bank 0's end plus what
// the larger digests of r's bank add to every entry up to i.
func (l *List) end(dir []*chunk, i, r int) int64 {
	return dir[i>>chunkShift].ends[2*(i&(chunkSize-1))+r&1] + l.extra[r]*int64(i+1)
}

// Len returns the number of entries, boot_aggregate and violations
// included (runtime_measurements_count).
func (l *List) Len() int { return int(l.count.Load()) }

// Violations returns the number of violation entries (the violations file).
func (l *List) Violations() int64 { return l.viol.Load() }

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
