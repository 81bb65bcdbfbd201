package measurelog

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// TestAppendHex checks the table-driven hex against encoding/hex for every
// length around the 4-byte steps, after a non-empty prefix.
func TestAppendHex(t *testing.T) {
	src := make([]byte, 70)
	for i := range src {
		src[i] = byte(i*37 + 11)
	}
	for n := 0; n <= len(src); n++ {
		got := appendHex([]byte("x:"), src[:n])
		if want := "x:" + hex.EncodeToString(src[:n]); string(got) != want {
			t.Fatalf("appendHex(%d bytes) = %q, want %q", n, got, want)
		}
	}
}

// TestPCRsFolded checks that PCRs folded on demand equal PCRs extended
// entry by entry (PCRs.Extend), whether they are asked for after every
// append, once at the end, or at a few points; violations and duplicates
// (not added, so not extended) included.
func TestPCRsFolded(t *testing.T) {
	var entries []*Entry
	for i := range 40 {
		e := testEntry(t, i%30) // the last 10 are duplicates
		if i%7 == 3 {
			e.PCR = 11
		}
		entries = append(entries, e)
		if i%9 == 4 {
			v, err := NewViolation(TemplateIMANG, DefaultPCR, "/tmp/v", SHA256)
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, v)
		}
	}
	want := NewPCRs(SHA1, SHA256, SHA384)
	ref := NewList(SHA384)
	for _, e := range entries {
		if ref.Append(e) {
			want.Extend(e)
		}
	}
	for _, tc := range []struct {
		name  string
		every int // ask for a PCR after every every-th append; 0: never
	}{{"every append", 1}, {"at the end only", 0}, {"every 11th", 11}} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewList(SHA384)
			for i, e := range entries {
				l.Append(e)
				if tc.every > 0 && i%tc.every == 0 {
					l.PCR(SHA256, DefaultPCR)
				}
			}
			for _, b := range []Algo{SHA1, SHA256, SHA384} {
				for _, pcr := range []int{DefaultPCR, 11} {
					if got, w := l.PCR(b, pcr), want.Value(b, pcr); !bytes.Equal(got, w) {
						t.Errorf("PCR %s %d = %x, want %x", b, pcr, got, w)
					}
				}
			}
			if got := l.PCRs().Value(SHA1, 11); !bytes.Equal(got, want.Value(SHA1, 11)) {
				t.Errorf("PCRs() sha1 11 = %x, want %x", got, want.Value(SHA1, 11))
			}
		})
	}
}

// TestCachedDigests checks that the digests an entry carries (kept by the
// decoder, or CacheDigests) are the ones computed from its fields, and that
// renderings through them are unchanged.
func TestCachedDigests(t *testing.T) {
	fresh := testEntry(t, 5)
	rec := fresh.AppendBinary(nil, SHA1)
	decoded, err := DecodeBinary(rec, SHA1)
	if err != nil || len(decoded) != 1 {
		t.Fatalf("DecodeBinary: %d entries, %v", len(decoded), err)
	}
	cached := testEntry(t, 5)
	cached.CacheDigests()
	for _, tc := range []struct {
		name string
		e    *Entry
	}{{"decoded", decoded[0]}, {"CacheDigests", cached}} {
		for _, b := range []Algo{SHA1, SHA256, SHA384} {
			if got, want := tc.e.TemplateDigest(b), templateDigest(nil, false, fresh.Fields, b); !bytes.Equal(got, want) {
				t.Errorf("%s: TemplateDigest(%s) = %x, want %x", tc.name, b, got, want)
			}
			if got, want := tc.e.AppendASCII(nil, b), fresh.AppendASCII(nil, b); !bytes.Equal(got, want) {
				t.Errorf("%s: AppendASCII(%s) = %q, want %q", tc.name, b, got, want)
			}
		}
		if got := tc.e.AppendBinary(nil, SHA1); !bytes.Equal(got, rec) {
			t.Errorf("%s: AppendBinary differs from the record it was decoded from", tc.name)
		}
	}
	if decoded[0].sums.get(SHA1) == nil {
		t.Error("the decoder did not keep the sha1 digest it checked")
	}
}

// TestDupTable checks the duplicate rule's table through growth, with
// keys that collide in full (several entries under one key: the callback
// decides) and keys that only share a place.
func TestDupTable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reserve int
		keyOf   func(i int) uint64
	}{
		{"distinct keys, grown", 0, func(i int) uint64 { return uint64(i) * 0x100000001b3 }},
		{"distinct keys, reserved", 5000, func(i int) uint64 { return uint64(i) * 0x100000001b3 }},
		{"eight entries a key", 0, func(i int) uint64 { return uint64(i / 8) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d dupTable
			d.reserve(tc.reserve)
			const n = 5000
			for i := range n {
				// Before insertion entry i is not found under its key.
				if d.find(tc.keyOf(i), func(j int) bool { return j == i }) {
					t.Fatalf("entry %d found before it was inserted", i)
				}
				d.insert(tc.keyOf(i), i)
			}
			for i := range n {
				if !d.find(tc.keyOf(i), func(j int) bool { return j == i }) {
					t.Fatalf("entry %d not found under its key", i)
				}
			}
			if d.find(tc.keyOf(n+7), func(j int) bool { return j == n+7 }) {
				t.Error("an entry never inserted was found")
			}
			if d.n != n || d.n*4 > len(d.slots)*3 {
				t.Errorf("%d entries in %d slots, want %d at a load <= 3/4", d.n, len(d.slots), n)
			}
		})
	}
}
