package measurelog

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/internal/cputime"
)

// (Not in bench_test.go: bench/run copies that file over a baseline tree,
// which has no journal-backed lists.)

// BenchmarkJournalListReplay is BenchmarkJournalReplay as the daemon now
// does it: ReplayJournal into a journal-backed list (records checked, only
// offsets kept) and the PCRs folded from the journal (sha256 digests
// computed), for a 100,000-entry journal per op; it also reports the heap
// the list keeps per entry.
func BenchmarkJournalListReplay(b *testing.B) {
	const n = 100000
	path := filepath.Join(b.TempDir(), "host.journal")
	var data []byte
	for _, e := range benchEntries(b, n) {
		data = e.AppendBinary(data, SHA1)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	data = nil
	log := logrus.New()
	log.SetOutput(io.Discard)
	replay := func() *List {
		l := NewJournalList(nil)
		j, err := ReplayJournal(path, log, l, 0)
		if err != nil || l.Len() != n {
			b.Fatalf("ReplayJournal: %d entries, %v", l.Len(), err)
		}
		j.Close()
		return l
	}
	before := heapInUse()
	l := replay()
	kept := float64(heapInUse()-before) / n
	runtime.KeepAlive(l)
	l = nil
	var cpu cputime.Meter
	cpu.Start()
	for b.Loop() {
		if replay().PCR(SHA256, DefaultPCR) == nil {
			b.Fatal("no PCR")
		}
	}
	cpu.Report(b, b.N*n)
	perSecond(b, b.N*n)
	b.ReportMetric(kept, "bytes/entry")
}

// BenchmarkJournalListReadAt: ReadAt of 128 KiB pieces of a journal-backed
// list of 100,000 entries (records read back with pread from the page
// cache), in the sha1 ascii rendering (digest in the record) and the
// sha256 one (digest computed from the template data), against the same
// list kept in memory.
func BenchmarkJournalListReadAt(b *testing.B) {
	const n = 100000
	entries := benchEntries(b, n)
	path := filepath.Join(b.TempDir(), "journal")
	var data []byte
	for _, e := range entries {
		data = e.AppendBinary(data, SHA1)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	jl := NewJournalList(nil)
	j, err := ReplayJournal(path, log, jl, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	mem := NewList()
	for _, e := range entries {
		mem.Append(e)
	}
	buf := make([]byte, 128<<10)
	for _, c := range []struct {
		name string
		l    *List
		bank Algo
	}{{"journal/sha1", jl, SHA1}, {"memory/sha1", mem, SHA1}, {"journal/sha256", jl, SHA256}, {"memory/sha256", mem, SHA256}} {
		b.Run(c.name, func(b *testing.B) {
			size := c.l.Size(ASCII, c.bank)
			b.SetBytes(size)
			var cpu cputime.Meter
			cpu.Start()
			for b.Loop() {
				for off := int64(0); off < size; off += int64(len(buf)) {
					if _, err := c.l.ReadAt(buf, off, ASCII, c.bank); err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
			}
			t := cpu.Total()
			b.ReportMetric(float64(b.N)*float64(size)/1e6/t.Seconds(), "MB/cpu-s")
		})
	}
}
