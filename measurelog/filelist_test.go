package measurelog

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// journalList writes entries as a journal at path, appending each to a
// journal-backed list at its offset as imans does once the record is
// durable, and returns the list.
func journalList(t *testing.T, path string, entries []*Entry, banks ...Algo) *List {
	t.Helper()
	w, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	l := NewJournalList(r, banks...)
	off := int64(0)
	for _, e := range entries {
		rec := e.AppendBinary(nil, SHA1)
		if _, err := w.WriteAt(rec, off); err != nil {
			t.Fatal(err)
		}
		l.AppendAt(e, off)
		off += int64(len(rec))
	}
	return l
}

// sameList checks that got renders, counts, lists and extends exactly as
// want, at every offset and in pieces of several sizes.
func sameList(t *testing.T, got, want *List) {
	t.Helper()
	if got.Len() != want.Len() || got.Violations() != want.Violations() {
		t.Fatalf("Len %d Violations %d, want %d %d", got.Len(), got.Violations(), want.Len(), want.Violations())
	}
	for _, bank := range want.Banks() {
		for _, f := range []Format{ASCII, Binary} {
			w := readAll(t, want, f, bank, 1<<20)
			if got.Size(f, bank) != int64(len(w)) {
				t.Errorf("%s %s: Size %d, want %d", f, bank, got.Size(f, bank), len(w))
			}
			for _, step := range []int{1, 97, 4096, 1 << 20} {
				if g := readAll(t, got, f, bank, step); !bytes.Equal(g, w) {
					t.Fatalf("%s %s read in %d-byte pieces differs", f, bank, step)
				}
			}
			buf := make([]byte, 300)
			for off := 0; off < len(w); off += 31 {
				n, err := got.ReadAt(buf, int64(off), f, bank)
				if err != nil && err != io.EOF {
					t.Fatal(err)
				}
				if !bytes.Equal(buf[:n], w[off:min(off+len(buf), len(w))]) {
					t.Fatalf("%s %s at %d differs", f, bank, off)
				}
			}
		}
	}
	for _, bank := range want.Banks() {
		for pcr := 0; pcr < NumPCRs; pcr++ {
			if !bytes.Equal(got.PCR(bank, pcr), want.PCR(bank, pcr)) {
				t.Errorf("PCR %d %s = %x, want %x", pcr, bank, got.PCR(bank, pcr), want.PCR(bank, pcr))
			}
		}
	}
	for i := 0; i < want.Len(); i++ {
		g, w := got.Entry(i), want.Entry(i)
		if g == nil || !bytes.Equal(g.AppendBinary(nil, SHA256), w.AppendBinary(nil, SHA256)) || g.Violation != w.Violation {
			t.Fatalf("Entry(%d) differs", i)
		}
	}
}

// TestJournalListGolden: a journal-backed list, built at run time
// (AppendAt) and by a replay (ReplayJournal), is byte for byte the list
// kept in memory, for every kernel scenario (violations, every template
// of the goldens, the ima template, duplicates dropped), with three banks.
func TestJournalListGolden(t *testing.T) {
	for _, g := range goldenDirs {
		t.Run(g.name, func(t *testing.T) {
			entries, err := DecodeBinary(readGolden(t, g.name, "binary_runtime_measurements_sha256"), SHA256)
			if err != nil {
				t.Fatal(err)
			}
			// A duplicate (dropped by both lists) and a violation at the end.
			entries = append(entries, entries[len(entries)-1])
			v, err := NewViolation(TemplateIMANG, DefaultPCR, "/tmp/v", SHA256)
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, v)
			mem := NewList(SHA512)
			for _, e := range entries {
				mem.Append(e)
			}
			path := filepath.Join(t.TempDir(), "journal")
			live := journalList(t, path, entries, SHA512)
			sameList(t, live, mem)

			replayed := NewJournalList(nil, SHA512)
			j, err := ReplayJournal(path, quietLog(), replayed, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			sameList(t, replayed, mem)
			// Appending after a replay continues at the journal's end.
			extra := testEntry(t, 4711)
			off, _ := os.Stat(path)
			if err := j.Append(extra); err != nil {
				t.Fatal(err)
			}
			replayed.AppendAt(extra, off.Size())
			mem.Append(extra)
			sameList(t, replayed, mem)
		})
	}
}

// TestJournalListDamage: ReplayJournal finds torn tails and damage as
// OpenJournal does and lists the valid prefix, read from the repaired
// file (not the quarantined original).
func TestJournalListDamage(t *testing.T) {
	var good []*Entry
	for i := 0; i < 5; i++ {
		good = append(good, testEntry(t, i))
	}
	full := encodeAll(good)
	midStart := len(encodeAll(good[:2]))
	lastStart := len(encodeAll(good[:4]))
	flip := append([]byte(nil), full...)
	flip[midStart+10] ^= 0x40
	tests := []struct {
		name    string
		data    []byte
		kept    int
		damaged bool
	}{
		{"clean", full, 5, false},
		{"empty", nil, 0, false},
		{"torn", full[:lastStart+7], 4, false},
		{"bad digest in the middle", flip, 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			l := NewJournalList(nil)
			j, err := ReplayJournal(path, quietLog(), l, 0)
			var dmg *DamageError
			if j == nil || tc.damaged != errors.As(err, &dmg) {
				t.Fatalf("journal %v, error %v, want damaged=%v", j, err, tc.damaged)
			}
			mem := NewList()
			for _, e := range good[:tc.kept] {
				mem.Append(e)
			}
			sameList(t, l, mem)
			extra := testEntry(t, 99)
			fi, _ := os.Stat(path)
			if err := j.Append(extra); err != nil {
				t.Fatal(err)
			}
			j.Close()
			l.AppendAt(extra, fi.Size())
			mem.Append(extra)
			sameList(t, l, mem)
		})
	}
	if _, err := ReplayJournal(filepath.Join(t.TempDir(), "j"), quietLog(), NewList(), 0); err == nil {
		t.Error("ReplayJournal into a list kept in memory: no error")
	}
}

// TestJournalListUnreadable: a record that cannot be read back (the
// journal cut under the daemon) is an error of the read, not bytes.
func TestJournalListUnreadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	l := journalList(t, path, []*Entry{testEntry(t, 1), testEntry(t, 2)})
	if err := os.Truncate(path, 10); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if n, err := l.ReadAt(buf, 0, ASCII, SHA1); err == nil || err == io.EOF || n != 0 {
		t.Errorf("ReadAt of a cut journal = %d, %v; want an error", n, err)
	}
	if l.Entry(1) != nil || l.PCR(SHA1, 10) != nil {
		t.Error("Entry or PCR of a cut journal is not nil")
	}
}

// TestJournalSeal: a sealed prefix's digests are trusted (a record with a
// wrong digest inside it is listed), a changed byte in it voids the seal
// (the damage is found and quarantined as without one), records appended
// after the seal are checked, and a stale or garbled seal is ignored.
func TestJournalSeal(t *testing.T) {
	var good []*Entry
	for i := 0; i < 5; i++ {
		good = append(good, testEntry(t, i))
	}
	full := encodeAll(good)
	midStart := len(encodeAll(good[:2]))
	badDigest := append([]byte(nil), full...)
	badDigest[midStart+10] ^= 0x40 // inside record 2's sha1 digest
	tests := []struct {
		name    string
		data    []byte // the journal when sealed
		seal    int64  // sealed length (-1: no seal)
		after   func(path string)
		damaged bool
	}{
		{"sealed with a wrong digest: trusted", badDigest, int64(len(badDigest)), nil, false},
		{"no seal: checked", badDigest, -1, nil, true},
		{"sealed, then a byte flipped: checked", full, int64(len(full)), func(p string) { flipAt(t, p, midStart+10) }, true},
		{"sealed prefix, damage appended after it: checked", full[:midStart], int64(midStart), func(p string) { appendFile(t, p, badDigest[midStart:]) }, true},
		{"garbled seal: checked", badDigest, int64(len(badDigest)), func(p string) { os.WriteFile(p+".seal", []byte("imafs-journal-seal x y\n"), 0o600) }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.seal >= 0 {
				if err := SealJournal(path, tc.seal); err != nil {
					t.Fatal(err)
				}
			}
			if tc.after != nil {
				tc.after(path)
			}
			l := NewJournalList(nil)
			j, err := ReplayJournal(path, quietLog(), l, 0)
			if j == nil {
				t.Fatal(err)
			}
			j.Close()
			var dmg *DamageError
			if errors.As(err, &dmg) != tc.damaged {
				t.Fatalf("error %v, want damaged=%v", err, tc.damaged)
			}
			if want := map[bool]int{true: 2, false: 5}[tc.damaged]; l.Len() != want {
				t.Errorf("%d entries listed, want %d", l.Len(), want)
			}
		})
	}
}

func flipAt(t *testing.T, path string, at int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
}
