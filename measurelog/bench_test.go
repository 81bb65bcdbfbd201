package measurelog

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/internal/cputime"
)

func benchEntries(b *testing.B, n int) []*Entry {
	b.Helper()
	entries := make([]*Entry, n)
	for i := range entries {
		e, err := NewEntry(TemplateIMANG, DefaultPCR, Measurement{
			FileDigest: SHA256.Sum([]byte(fmt.Sprint(i))), FileAlgo: SHA256,
			Name: fmt.Sprintf("/usr/lib/x86_64-linux-gnu/libexample-%d.so.1", i),
		})
		if err != nil {
			b.Fatal(err)
		}
		entries[i] = e
	}
	return entries
}

func perSecond(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkNewEntry(b *testing.B) {
	d := SHA256.Sum(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewEntry(TemplateIMANG, 10, Measurement{FileDigest: d, FileAlgo: SHA256, Name: "/usr/bin/example"}); err != nil {
			b.Fatal(err)
		}
	}
	perSecond(b, b.N)
}

// BenchmarkEncode: one entry per op, template digest computed each time
// (Entry methods do not cache).
func BenchmarkEncode(b *testing.B) {
	entries := benchEntries(b, 1000)
	for _, tc := range []struct {
		name string
		f    func(dst []byte, e *Entry) []byte
	}{
		{"binary-sha1", func(dst []byte, e *Entry) []byte { return e.AppendBinary(dst, SHA1) }},
		{"ascii-sha1", func(dst []byte, e *Entry) []byte { return e.AppendASCII(dst, SHA1) }},
		{"binary-sha256", func(dst []byte, e *Entry) []byte { return e.AppendBinary(dst, SHA256) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			i := 0
			for b.Loop() {
				buf = tc.f(buf[:0], entries[i%len(entries)])
				i++
			}
			perSecond(b, b.N)
		})
	}
}

// BenchmarkDecodeBinary decodes (and verifies the digests of) a
// 10000-entry sha1 list per op.
func BenchmarkDecodeBinary(b *testing.B) {
	entries := benchEntries(b, 10000)
	var data []byte
	for _, e := range entries {
		data = e.AppendBinary(data, SHA1)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var cpu cputime.Meter
	cpu.Start()
	for b.Loop() {
		got, err := DecodeBinary(data, SHA1)
		if err != nil || len(got) != len(entries) {
			b.Fatal(err)
		}
	}
	cpu.Report(b, b.N*len(entries))
	perSecond(b, b.N*len(entries))
}

func BenchmarkListAppend(b *testing.B) {
	entries := benchEntries(b, 100000)
	l := NewList()
	b.ReportAllocs()
	i := 0
	var cpu cputime.Meter
	cpu.Start()
	for b.Loop() {
		if i == len(entries) {
			b.StopTimer()
			cpu.Stop()
			l = NewList()
			i = 0
			cpu.Start()
			b.StartTimer()
		}
		l.Append(entries[i])
		i++
	}
	cpu.Report(b, b.N)
	perSecond(b, b.N)
}

// BenchmarkListReadAt reads the whole ascii sha1 rendering of a
// 10000-entry list in 4 KiB reads (a FUSE reader) per op.
func BenchmarkListReadAt(b *testing.B) {
	l := NewList()
	for _, e := range benchEntries(b, 10000) {
		l.Append(e)
	}
	buf := make([]byte, 4096)
	b.SetBytes(l.Size(ASCII, SHA1))
	b.ReportAllocs()
	var cpu cputime.Meter
	cpu.Start()
	for b.Loop() {
		for off := int64(0); ; {
			n, err := l.ReadAt(buf, off, ASCII, SHA1)
			off += int64(n)
			if err == io.EOF {
				break
			}
		}
	}
	t := cpu.Total()
	cpu.Report(b, b.N*l.Len())
	b.ReportMetric(float64(b.N)*float64(l.Size(ASCII, SHA1))/1e6/t.Seconds(), "MB/cpu-s")
	perSecond(b, b.N*l.Len())
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkListMemory reports the heap a List holds per entry, for 100k
// ima-ng entries (sha256 file digests, ~45-byte paths) in the sha1 and
// sha256 banks; the source entries are garbage before measuring. The list
// is built once whatever -benchtime says; the timed loop only reads Len.
func BenchmarkListMemory(b *testing.B) {
	const n = 100000
	before := heapInUse()
	l := NewList()
	for i := 0; i < n; i++ {
		e, _ := NewEntry(TemplateIMANG, DefaultPCR, Measurement{
			FileDigest: SHA256.Sum([]byte(fmt.Sprint(i))), FileAlgo: SHA256,
			Name: fmt.Sprintf("/usr/lib/x86_64-linux-gnu/libexample-%d.so.1", i),
		})
		l.Append(e)
	}
	after := heapInUse()
	for b.Loop() {
		_ = l.Len()
	}
	b.ReportMetric(float64(after-before)/n, "bytes/entry")
	b.ReportMetric(float64(l.Size(ASCII, SHA1)+l.Size(Binary, SHA1)+l.Size(ASCII, SHA256)+l.Size(Binary, SHA256))/n, "rendered-bytes/entry")
	runtime.KeepAlive(l)
}

// BenchmarkJournalReplay measures what a daemon's start does with a
// journal per entry: OpenJournal (read, decode, check every record's
// template digest) and Append of every entry to a new list (sha1 and
// sha256 banks), for a 100,000-entry journal per op.
func BenchmarkJournalReplay(b *testing.B) {
	const n = 100000
	path := filepath.Join(b.TempDir(), "host.journal")
	var data []byte
	for _, e := range benchEntries(b, n) {
		data = e.AppendBinary(data, SHA1)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	var cpu cputime.Meter
	cpu.Start()
	for b.Loop() {
		j, entries, err := OpenJournalLogger(path, log)
		if err != nil || len(entries) != n {
			b.Fatalf("OpenJournal: %d entries, %v", len(entries), err)
		}
		l := NewList()
		// As imans does; through an interface, so that bench/run can
		// run this file against code from before Reserve.
		if r, ok := any(l).(interface{ Reserve(int) }); ok {
			r.Reserve(len(entries))
		}
		for _, e := range entries {
			l.Append(e)
		}
		if l.Len() != n || l.PCR(SHA256, DefaultPCR) == nil {
			b.Fatalf("replayed %d entries, want %d", l.Len(), n)
		}
		j.Close()
	}
	cpu.Report(b, b.N*n)
	perSecond(b, b.N*n)
}
