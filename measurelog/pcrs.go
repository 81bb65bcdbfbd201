package measurelog

import (
	"bytes"
	"fmt"
	"sort"
)

// PCRs holds one register file per bank, replaying what a TPM does when
// IMA extends it: new = H(old || template digest), or H(old || 0xff..ff)
// for a violation (ima_add_template_entry invalidates the PCR).
type PCRs struct {
	banks   []Algo
	regs    map[Algo]*[NumPCRs][]byte
	touched uint64 // bit i: PCR i extended at least once
}

// NewPCRs returns all-zero PCRs for banks (SHA1 and SHA256 when none are given).
func NewPCRs(banks ...Algo) *PCRs {
	if len(banks) == 0 {
		banks = []Algo{SHA1, SHA256}
	}
	p := &PCRs{regs: make(map[Algo]*[NumPCRs][]byte)}
	for _, b := range banks {
		if !b.Valid() {
			continue
		}
		if _, dup := p.regs[b]; dup {
			continue
		}
		p.banks = append(p.banks, b)
		p.regs[b] = new([NumPCRs][]byte)
	}
	return p
}

// Banks returns the banks of p.
func (p *PCRs) Banks() []Algo { return append([]Algo(nil), p.banks...) }

// Extend extends e's PCR in every bank.
func (p *PCRs) Extend(e *Entry) {
	if e.PCR >= NumPCRs {
		return
	}
	for _, b := range p.banks {
		var d []byte
		if e.Violation {
			d = bytes.Repeat([]byte{0xff}, b.Size())
		} else {
			d = e.TemplateDigest(b)
		}
		p.extend(b, e.PCR, d)
	}
}

// extendDigest extends pcr of bank with a template digest (nil: violation).
func (p *PCRs) extend(bank Algo, pcr uint32, digest []byte) {
	r := p.regs[bank]
	old := r[pcr]
	if old == nil {
		old = make([]byte, bank.Size())
	}
	var buf [2 * 64]byte
	in := append(append(buf[:0], old...), digest...)
	r[pcr] = bank.appendSum(old[:0], in) // one-shot: no hash state allocated
	p.touched |= 1 << pcr
}

// Value returns a copy of PCR index of bank (all zeros when never
// extended; nil for a bank p does not keep or an index out of range).
func (p *PCRs) Value(bank Algo, index int) []byte {
	r, ok := p.regs[bank]
	if !ok || index < 0 || index >= NumPCRs {
		return nil
	}
	if r[index] == nil {
		return make([]byte, bank.Size())
	}
	return append([]byte(nil), r[index]...)
}

// Touched returns the sorted indexes of PCRs extended at least once.
func (p *PCRs) Touched() []int {
	var t []int
	for i := 0; i < NumPCRs; i++ {
		if p.touched&(1<<i) != 0 {
			t = append(t, i)
		}
	}
	sort.Ints(t)
	return t
}

// clone returns a deep copy of p.
func (p *PCRs) clone() *PCRs {
	c := &PCRs{banks: append([]Algo(nil), p.banks...), regs: make(map[Algo]*[NumPCRs][]byte), touched: p.touched}
	for b, r := range p.regs {
		nr := new([NumPCRs][]byte)
		for i, v := range r {
			if v != nil {
				nr[i] = append([]byte(nil), v...)
			}
		}
		c.regs[b] = nr
	}
	return c
}

// Replay extends fresh PCRs with entries, in order.
func Replay(entries []*Entry, banks ...Algo) *PCRs {
	p := NewPCRs(banks...)
	for _, e := range entries {
		p.Extend(e)
	}
	return p
}

// EvmctlPCRs returns bank's PCR-00..PCR-23 in the format of the files
// `evmctl ima_measurement --pcrs ALG,FILE` reads ("PCR-NN: hex\n").
func (p *PCRs) EvmctlPCRs(bank Algo) []byte {
	var b []byte
	for i := 0; i < 24; i++ {
		b = fmt.Appendf(b, "PCR-%02d: %x\n", i, p.Value(bank, i))
	}
	return b
}
