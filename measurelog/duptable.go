package measurelog

// dupTable is the duplicate rule's index: an open-addressing hash table
// (linear probing) of entry numbers, keyed by the first 8 bytes of the
// sha1 template digest mixed with the PCR. A slot is tag<<32 | (entry+1)
// (0: empty), the tag being 32 more bits of the key, so that a probe
// looks at an entry's record only when the tags agree; the record
// decides. 8 bytes a slot at a load of at most 3/4: ~11 bytes an entry,
// against ~30 for a Go map of the same, and no per-entry allocation.
type dupTable struct {
	slots []uint64
	n     int
}

const dupMinSlots = 64

func dupHash(key uint64) uint64 { return key * 0x9e3779b97f4a7c15 }

// reserve sizes t for n entries (no effect once it holds any).
func (t *dupTable) reserve(n int) {
	if t.n > 0 {
		return
	}
	size := dupMinSlots
	for size*3 < n*4 {
		size *= 2
	}
	if size > len(t.slots) {
		t.slots = make([]uint64, size)
	}
}

// find reports whether an entry with key for which same returns true is
// in t.
func (t *dupTable) find(key uint64, same func(i int) bool) bool {
	if len(t.slots) == 0 {
		return false
	}
	mask := uint64(len(t.slots) - 1)
	tag := dupHash(key) >> 32
	for p := place(tag, mask); ; p = (p + 1) & mask {
		s := t.slots[p]
		if s == 0 {
			return false
		}
		if s>>32 == tag && same(int(uint32(s))-1) {
			return true
		}
	}
}

// insert adds entry i under key.
func (t *dupTable) insert(key uint64, i int) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.grow()
	}
	mask := uint64(len(t.slots) - 1)
	tag := dupHash(key) >> 32
	p := place(tag, mask)
	for t.slots[p] != 0 {
		p = (p + 1) & mask
	}
	t.slots[p] = tag<<32 | uint64(uint32(i+1))
	t.n++
}

// grow doubles t; a slot's place comes from its tag alone, so it can be
// placed again.
func (t *dupTable) grow() {
	old := t.slots
	t.slots = make([]uint64, max(dupMinSlots, 2*len(old)))
	mask := uint64(len(t.slots) - 1)
	for _, s := range old {
		if s == 0 {
			continue
		}
		p := place(s>>32, mask)
		for t.slots[p] != 0 {
			p = (p + 1) & mask
		}
		t.slots[p] = s
	}
}

// place is a slot's first place for tag (32 bits, spread over the table).
func place(tag, mask uint64) uint64 { return (tag * 0x9e3779b97f4a7c15 >> 32) & mask }
