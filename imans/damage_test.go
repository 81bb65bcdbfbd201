package imans

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
)

// recordOffsets returns the byte offset of every record of a journal.
func recordOffsets(t *testing.T, data []byte) []int {
	t.Helper()
	entries, err := measurelog.DecodeBinary(data, measurelog.SHA1)
	if err != nil {
		t.Fatalf("journal before the damage: %v", err)
	}
	var offs []int
	off := 0
	for _, e := range entries {
		offs = append(offs, off)
		off += len(e.AppendBinary(nil, measurelog.SHA1))
	}
	return offs
}

// A kind of damage: how to damage the file and how many entries of the
// journal's n must come back.
type damage struct {
	name     string
	apply    func(t *testing.T, path string) // damages the journal at path
	kept     func(n int) int                 // entries restored of n
	degraded bool
}

func rewrite(t *testing.T, path string, f func(data []byte, offs []int) []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(data, recordOffsets(t, data)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ima-ng record: pcr 4, sha1 digest 20, name length 4, "ima-ng", data length.
const imaNGDataLenAt = 4 + 20 + 4 + 6

var damages = []damage{
	{"torn tail", func(t *testing.T, p string) {
		rewrite(t, p, func(d []byte, offs []int) []byte { return d[:len(d)-5] })
	}, func(n int) int { return n - 1 }, false},
	{"corrupt length in the middle, past the end", func(t *testing.T, p string) {
		rewrite(t, p, func(d []byte, offs []int) []byte {
			binary.LittleEndian.PutUint32(d[offs[len(offs)/2]+imaNGDataLenAt:], 1<<20)
			return d
		})
	}, func(n int) int { return n / 2 }, true},
	{"bad digest in the middle", func(t *testing.T, p string) {
		rewrite(t, p, func(d []byte, offs []int) []byte { d[offs[len(offs)/2]+8] ^= 1; return d })
	}, func(n int) int { return n / 2 }, true},
	{"journal empty", func(t *testing.T, p string) {
		rewrite(t, p, func([]byte, []int) []byte { return nil })
	}, func(int) int { return 0 }, true},
	{"journal missing", func(t *testing.T, p string) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}, func(int) int { return 0 }, true},
}

// TestJournalDamageRestore: for each kind of damage to a container's
// journal and to the host's, a restart restores what can be proven (the
// valid prefix), keeps the original byte for byte, records a
// <journal-damaged> violation, marks the namespace degraded (again after
// a second restart, with identical lists and PCRs) and leaves the other
// namespaces alone. A torn tail is only cut.
func TestJournalDamageRestore(t *testing.T) {
	needRoot(t)
	for _, where := range []string{"container", HostID} {
		for _, dm := range damages {
			t.Run(where+": "+dm.name, func(t *testing.T) { checkDamage(t, where, dm) })
		}
	}
}

func checkDamage(t *testing.T, where string, dm damage) {
	state := t.TempDir()
	var log bytes.Buffer
	r := openRegistry(t, state, &log)
	c, err := r.Attach("c", harness.StartSleeper(t).Pid, []byte(`{"ociVersion":"1.0.2"}`))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := r.Record(c, bufEntry(t, c, fmt.Sprintf("/f%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	ns, other := c, r.Host()
	path := filepath.Join(state, "ns", "c", "list.journal")
	if where == HostID {
		ns, other = r.Host(), c
		path = filepath.Join(state, "host.journal")
	}
	wantOther := listBytes(t, other.List)
	r.Close()
	original, _ := os.ReadFile(path)
	records, err := measurelog.DecodeBinary(original, measurelog.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	n := len(records)
	// What can be proven: the first kept records, replayed (the kernel's
	// duplicate rule drops a container's boot_aggregate from the host list).
	proven := measurelog.NewList()
	for _, e := range records[:dm.kept(n)] {
		proven.Append(e)
	}
	dm.apply(t, path)
	damaged, _ := os.ReadFile(path)

	log.Reset()
	r2 := openRegistry(t, state, &log)
	r2.Restore()
	got, ok := r2.Get(ns.ID)
	if !ok {
		t.Fatalf("%s not restored:\n%s", ns.ID, log.String())
	}
	kept := proven.Len()
	wantLen := kept
	if dm.degraded {
		wantLen++
	}
	if got.List.Len() != wantLen {
		t.Errorf("%d entries restored, want %d (%d kept of %d)", got.List.Len(), wantLen, kept, n)
	}
	for i := 0; i < kept && i < got.List.Len(); i++ {
		if got.List.Entry(i).Name() != proven.Entry(i).Name() {
			t.Fatalf("entry %d is %s, was %s", i, got.List.Entry(i).Name(), proven.Entry(i).Name())
		}
	}
	saved, _ := filepath.Glob(path + ".corrupt-*")
	if !dm.degraded {
		if len(saved) != 0 || r2.Degraded(got) != "" || got.List.Violations() != 0 {
			t.Errorf("torn tail: saved %v, degraded %q, %d violations", saved, r2.Degraded(got), got.List.Violations())
		}
	} else {
		last := got.List.Entry(got.List.Len() - 1)
		if !last.Violation || last.Name() != JournalDamagedName || got.List.Violations() != 1 {
			t.Errorf("last entry %s (violation %v), %d violations", last.Name(), last.Violation, got.List.Violations())
		}
		if r2.Degraded(got) == "" || !bytes.Contains(log.Bytes(), []byte("level=error")) {
			t.Errorf("not degraded or not logged as an error:\n%s", log.String())
		}
		wantSaved := 1
		if dm.name == "journal missing" {
			wantSaved = 0 // nothing to keep, but a mark that it was missing
			if m, _ := filepath.Glob(path + ".missing-*"); len(m) != 1 {
				t.Errorf("no .missing mark: %v", m)
			}
		}
		if len(saved) != wantSaved {
			t.Fatalf("kept originals %v, want %d", saved, wantSaved)
		}
		if wantSaved == 1 {
			if b, _ := os.ReadFile(saved[0]); !bytes.Equal(b, damaged) {
				t.Errorf("kept original (%d bytes) is not the damaged file (%d bytes)", len(b), len(damaged))
			}
		}
	}
	// The other namespace is intact; the host also lists a container's
	// violation entry (it sees every entry of every container).
	o, _ := r2.Get(other.ID)
	gotOther := listBytes(t, o.List)
	if other.IsHost() && dm.degraded {
		last := o.List.Entry(o.List.Len() - 1)
		if !last.Violation || last.Name() != JournalDamagedName {
			t.Errorf("host list does not end with the container's violation: %s", last.Name())
		}
		gotOther = gotOther[:len(gotOther)-len(last.AppendBinary(nil, measurelog.SHA256))]
	}
	if !bytes.Equal(gotOther, wantOther) || r2.Degraded(o) != "" {
		t.Errorf("%s's list changed (degraded %q)", other.ID, r2.Degraded(o))
	}
	// A second restart replays the repaired journal: identical list and
	// PCRs; the mark stays while the quarantined original is there.
	wantList, wantPCR := listBytes(t, got.List), got.List.PCR(measurelog.SHA256, DefaultPCR)
	r2.Close()
	r3 := openRegistry(t, state, &log)
	defer r3.Close()
	r3.Restore()
	again, _ := r3.Get(ns.ID)
	if again == nil || !bytes.Equal(listBytes(t, again.List), wantList) || !bytes.Equal(again.List.PCR(measurelog.SHA256, DefaultPCR), wantPCR) {
		t.Fatalf("second restart: list or PCR differs")
	}
	if (r3.Degraded(again) != "") != dm.degraded {
		t.Errorf("second restart: degraded %q", r3.Degraded(again))
	}
}
