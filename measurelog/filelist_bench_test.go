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
