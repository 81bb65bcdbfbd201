package measurelog

import (
	"bytes"
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

// TestJournalDamagedTail opens journals whose last record was cut in the
// middle (a crash during write: cut silently) or followed by garbage
// (corruption: cut, saved, reported).
func TestJournalDamagedTail(t *testing.T) {
	var good []*Entry
	for i := 0; i < 5; i++ {
		good = append(good, testEntry(t, i))
	}
	full := encodeAll(good)
	lastStart := len(encodeAll(good[:4]))
	tests := []struct {
		name    string
		data    []byte
		entries int
		cutAt   int
		corrupt bool
	}{
		{"clean", full, 5, len(full), false},
		{"truncated in the middle of the last record", full[:lastStart+(len(full)-lastStart)/2], 4, lastStart, false},
		{"truncated inside the pcr", full[:lastStart+1], 4, lastStart, false},
		{"garbage tail", append(append([]byte(nil), full...), []byte("\xde\xad\xbe\xefgarbage that is not a record......")...), 5, len(full), true},
		{"zeroed tail", append(append([]byte(nil), full...), make([]byte, 4096)...), 5, len(full), true},
		{"flipped byte in the last record", func() []byte {
			b := append([]byte(nil), full...)
			b[len(b)-2] ^= 0x40
			return b
		}(), 4, lastStart, true},
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
			var de *DecodeError
			if tc.corrupt != errors.As(err, &de) {
				t.Fatalf("error %v, corrupt=%v", err, tc.corrupt)
			}
			if tc.corrupt {
				if de.Offset != int64(tc.cutAt) {
					t.Errorf("DecodeError offset %d, want %d", de.Offset, tc.cutAt)
				}
				matches, _ := filepath.Glob(path + ".corrupt-*")
				if len(matches) != 1 {
					t.Fatalf("saved tails: %v", matches)
				}
				saved, err := os.ReadFile(matches[0])
				if err != nil || !bytes.Equal(saved, tc.data[tc.cutAt:]) {
					t.Errorf("saved corrupt tail: %v (%d bytes)", err, len(saved))
				}
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
