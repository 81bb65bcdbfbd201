package measurelog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
)

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func encodeAll(entries []*Entry) []byte {
	var b []byte
	for _, e := range entries {
		b = e.AppendBinary(b, SHA1)
	}
	return b
}

// TestJournalRoundTrip appends from many goroutines (group commit), reopens
// and gets every entry back, and keeps appending after the reopen.
func TestJournalRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host.journal")
	j, entries, err := OpenJournalLogger(path, quietLog())
	if err != nil || len(entries) != 0 {
		t.Fatalf("open new journal: %v, %d entries", err, len(entries))
	}
	v, _ := NewViolation(TemplateIMANG, 10, "/tmp/v", SHA256)
	if err := j.Append(v); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := j.Append(testEntry(t, w*1000+i)); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	j.mu.Lock()
	syncs := j.syncs
	j.mu.Unlock()
	t.Logf("%d appends, %d fsyncs", 1+writers*each, syncs)
	if syncs >= 1+writers*each {
		t.Errorf("no group commit: %d fsyncs for %d appends", syncs, 1+writers*each)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(v); !errors.Is(err, ErrJournalClosed) {
		t.Errorf("Append after Close = %v", err)
	}
	j, entries, err = OpenJournalLogger(path, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1+writers*each || !entries[0].Violation {
		t.Fatalf("reopened: %d entries (violation first: %v)", len(entries), entries[0].Violation)
	}
	seen := map[string]bool{}
	for _, e := range entries[1:] {
		seen[e.Name()] = true
	}
	if len(seen) != writers*each {
		t.Errorf("%d distinct entries, want %d", len(seen), writers*each)
	}
	if err := j.Append(testEntry(t, -1)); err != nil {
		t.Fatal(err)
	}
	j.Close()
	_, entries, err = OpenJournalLogger(path, quietLog())
	if err != nil || len(entries) != 2+writers*each {
		t.Fatalf("after append to reopened journal: %v, %d entries", err, len(entries))
	}
}

// TestJournalDamage opens journals damaged in each way: a torn tail (the
// last record cut short by a crash, nothing valid after it) is cut
// silently; any other damage keeps the original file byte for byte
// (quarantine), restores the valid prefix and is reported as a
// *DamageError.
func TestJournalDamage(t *testing.T) {
	var good []*Entry
	for i := 0; i < 5; i++ {
		good = append(good, testEntry(t, i))
	}
	full := encodeAll(good)
	lastStart := len(encodeAll(good[:4]))
	midStart := len(encodeAll(good[:2]))
	// ima-ng record: pcr 4, digest 20, name length 4, "ima-ng", data length at 34.
	const dataLenAt = 4 + 20 + 4 + 6
	withLen := func(at int, n uint32) []byte {
		b := append([]byte(nil), full...)
		binary.LittleEndian.PutUint32(b[at+dataLenAt:], n)
		return b
	}
	flip := func(at int) []byte {
		b := append([]byte(nil), full...)
		b[at] ^= 0x40
		return b
	}
	tests := []struct {
		name    string
		data    []byte
		entries int  // restored
		cutAt   int  // journal length afterwards
		damaged bool // quarantined and reported
	}{
		{"clean", full, 5, len(full), false},
		{"torn: last record cut in its middle", full[:lastStart+(len(full)-lastStart)/2], 4, lastStart, false},
		{"torn: cut inside the pcr", full[:lastStart+1], 4, lastStart, false},
		{"torn: last record's length points past the end", withLen(lastStart, 1<<20), 4, lastStart, false},
		{"corrupt length in the middle, pointing past the end", withLen(midStart, 1<<20), 2, midStart, true},
		{"corrupt length in the middle, pointing inside the file", withLen(midStart, 60), 2, midStart, true},
		{"length beyond the decoder's bound", withLen(midStart, 1<<30), 2, midStart, true},
		{"bad digest in the middle", flip(midStart + 10), 2, midStart, true},
		{"flipped byte in the last record", flip(len(full) - 2), 4, lastStart, true},
		{"garbage tail", append(append([]byte(nil), full...), []byte("\xde\xad\xbe\xefgarbage that is not a record......")...), 5, len(full), true},
		{"zeroed tail", append(append([]byte(nil), full...), make([]byte, 4096)...), 5, len(full), true},
		{"garbage from the start", []byte("not a journal at all, not at all...."), 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			j, entries, err := OpenJournalLogger(path, quietLog())
			if j == nil {
				t.Fatalf("no journal: %v", err)
			}
			defer j.Close()
			var dmg *DamageError
			if tc.damaged != errors.As(err, &dmg) {
				t.Fatalf("error %v, damaged=%v", err, tc.damaged)
			}
			matches, _ := filepath.Glob(path + ".corrupt-*")
			if tc.damaged {
				var de *DecodeError
				if !errors.As(err, &de) || de.Offset != int64(tc.cutAt) || de.Torn {
					t.Errorf("DecodeError %v, want offset %d", de, tc.cutAt)
				}
				if len(matches) != 1 || dmg.Saved != matches[0] || dmg.Kept != tc.entries || dmg.Size != int64(len(tc.data)) {
					t.Fatalf("saved originals %v, damage %+v", matches, dmg)
				}
				saved, err := os.ReadFile(matches[0])
				if err != nil || !bytes.Equal(saved, tc.data) {
					t.Errorf("quarantined copy differs from the original: %v (%d of %d bytes)", err, len(saved), len(tc.data))
				}
			} else if len(matches) != 0 {
				t.Errorf("quarantined a torn tail: %v", matches)
			}
			if len(entries) != tc.entries {
				t.Errorf("%d entries, want %d", len(entries), tc.entries)
			}
			if fi, _ := os.Stat(path); fi.Size() != int64(tc.cutAt) {
				t.Errorf("file cut to %d bytes, want %d", fi.Size(), tc.cutAt)
			}
			// Appending continues right after the last good record.
			extra := testEntry(t, 99)
			if err := j.Append(extra); err != nil {
				t.Fatal(err)
			}
			j.Close()
			_, again, err := OpenJournalLogger(path, quietLog())
			if err != nil || len(again) != tc.entries+1 || again[tc.entries].Name() != extra.Name() {
				t.Errorf("reopen after append: %v, %d entries", err, len(again))
			}
		})
	}
}

func TestJournalOpenErrors(t *testing.T) {
	if _, _, err := OpenJournalLogger(filepath.Join(t.TempDir(), "missing-dir", "j"), quietLog()); err == nil {
		t.Error("journal in a missing directory opened")
	}
	j, _, err := OpenJournalLogger(filepath.Join(t.TempDir(), "j"), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := j.Append(&Entry{PCR: 99, Template: TemplateIMANG}); err == nil {
		t.Error("entry with pcr 99 journaled")
	}
}

// TestJournalWriteFailure: a write that fails (here: the descriptor made
// read-only, as a failing disk would refuse it) fails only its own appends;
// the file keeps its durable records, and appends work again once writes do.
func TestJournalWriteFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, _, err := OpenJournalLogger(path, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := j.Append(testEntry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	good, _ := os.ReadFile(path)
	rw := j.f
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	j.f = ro
	if err := j.Append(testEntry(t, 10)); err == nil {
		t.Fatal("append through a read-only descriptor succeeded")
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, good) {
		t.Errorf("journal changed by a failed append: %d bytes, had %d", len(now), len(good))
	}
	j.f = rw
	ro.Close()
	if err := j.Append(testEntry(t, 11)); err != nil {
		t.Fatalf("append after writes work again: %v", err)
	}
	j.Close()
	_, entries, err := OpenJournalLogger(path, quietLog())
	if err != nil || len(entries) != 4 || entries[3].Name() != testEntry(t, 11).Name() {
		t.Errorf("reopened: %v, %d entries", err, len(entries))
	}
}
