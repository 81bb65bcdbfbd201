package kernelsrc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/internal/cputime"
	"github.com/imafs/imafs/measurelog"
)

// benchLabels are the containers the benchmark lists are spread over; every
// fifth entry is the host's (empty ns field).
var benchLabels = []string{"c1", "c2", "c3", "c4"}

// benchList returns a kernel binary list (sha1 bank) of n distinct ima-nsreg
// entries, as the patched kernel writes them, spread round-robin over the
// host and benchLabels. round makes the names (so the template digests)
// differ from one round to the next, so that every round's entries are new
// to the lists (the duplicate rule would drop a repeated entry early).
func benchList(b *testing.B, n, round int) []byte {
	b.Helper()
	var out []byte
	for i := range n {
		label := ""
		if k := i % (len(benchLabels) + 1); k > 0 {
			label = benchLabels[k-1]
		}
		name := fmt.Sprintf("/usr/lib/x86_64-linux-gnu/r%d/lib%07d.so.1", round, i)
		d := sha256.Sum256([]byte(name))
		e, err := measurelog.NewEntry(measurelog.TemplateIMANSReg, 10, measurelog.Measurement{
			FileDigest: d[:], FileAlgo: measurelog.SHA256, Name: name, Namespace: label,
		})
		if err != nil {
			b.Fatalf("NewEntry(%s, %q): %v", name, label, err)
		}
		out = e.AppendBinary(out, measurelog.SHA1)
	}
	return out
}

// BenchmarkDemultiplex measures the kernel source's demultiplexing rate: a
// kernel binary list (sha1 bank) of 10,000 ima-nsreg entries, one in five the
// host's and the rest spread over four containers, goes through Source.tail
// (decode, ns label, registry lookup, Record) per op; the figure is entries/s.
//
//   - registry=fake: the test's fakeRegistry (list appends, no locks of the
//     real registry); runs anywhere.
//   - registry=memory: a real imans.Registry without a state directory and
//     four real containers attached (sleep as pid 1 of new pid namespaces,
//     via unshare: needs root). This is the demultiplexing rate proper.
//   - registry=journal: the same with a state directory on a temp dir, as
//     `imafs serve` runs: every Record is journaled and fsynced before it
//     returns, and the Source records one entry at a time, so this is the
//     rate of the disk's fsyncs (1,000 entries per op).
//
// The entries are built before the timer runs (they are new each op, so the
// duplicate rule never shortens the work).
func BenchmarkDemultiplex(b *testing.B) {
	b.Run("registry=fake", func(b *testing.B) {
		benchDemultiplex(b, 10000, func(b *testing.B) Registry {
			return newFakeRegistry(benchLabels...)
		})
	})
	b.Run("registry=memory", func(b *testing.B) {
		benchDemultiplex(b, 10000, func(b *testing.B) Registry { return realRegistry(b, "") })
	})
	b.Run("registry=journal", func(b *testing.B) {
		benchDemultiplex(b, 1000, func(b *testing.B) Registry { return realRegistry(b, b.TempDir()) })
	})
}

func benchDemultiplex(b *testing.B, n int, newReg func(*testing.B) Registry) {
	reg := newReg(b)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // tail returns at the end of each list
	var total, round int
	var cpu cputime.Meter
	for b.Loop() {
		b.StopTimer()
		list := benchList(b, n, round)
		round++
		s := New(reg, Options{Log: quietLog()})
		b.StartTimer()
		cpu.Start()
		if err := s.tail(ctx, bytes.NewReader(list)); err != nil {
			b.Fatalf("tail: %v", err)
		}
		cpu.Stop()
		if got := s.Entries(); got != uint64(n) {
			b.Fatalf("Entries = %d, want %d", got, n)
		}
		if f := s.Foreign(); f != 0 {
			b.Fatalf("Foreign = %d: a container's entries went to the host only", f)
		}
		total += n
	}
	b.StopTimer()
	// Every container got its share: the demultiplexing really happened.
	for _, id := range benchLabels {
		ns, ok := reg.Get(id)
		if !ok {
			b.Fatalf("container %s not registered", id)
		}
		if min := total / (len(benchLabels) + 1); ns.List.Len() < min {
			b.Fatalf("container %s list has %d entries, want at least %d", id, ns.List.Len(), min)
		}
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "entries/s")
	cpu.Report(b, total)
}

// realRegistry returns an imans.Registry (on stateDir when not empty) with
// benchLabels attached to real containers; it skips without root.
func realRegistry(b *testing.B, stateDir string) *imans.Registry {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root (pid namespaces for the attached containers)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		b.Skip("needs unshare(1)")
	}
	reg, err := imans.NewRegistry(imans.Options{StateDir: stateDir, Log: quietLog()})
	if err != nil {
		b.Fatalf("NewRegistry: %v", err)
	}
	b.Cleanup(func() { reg.Close() })
	for _, id := range benchLabels {
		if _, err := reg.Attach(id, harness.StartSleeper(b).Pid, nil); err != nil {
			b.Fatalf("Attach %s: %v", id, err)
		}
	}
	return reg
}
