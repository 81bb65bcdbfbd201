// Package cputime measures the CPU time (user + system, all threads, so
// the garbage collector's too) a process spends, for benchmarks on a
// machine whose other jobs make wall-clock figures noise: a benchmark
// reports what it cost, not how long it waited for a CPU.
package cputime

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Now returns the process's CPU time so far (getrusage RUSAGE_SELF).
func Now() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Meter adds up the CPU time of the timed parts of a benchmark.
type Meter struct {
	total, start time.Duration
	running      bool
}

// Start starts (or resumes) timing.
func (m *Meter) Start() {
	if !m.running {
		m.start, m.running = Now(), true
	}
}

// Stop pauses timing.
func (m *Meter) Stop() {
	if m.running {
		m.total += Now() - m.start
		m.running = false
	}
}

// Total returns the CPU time timed so far.
func (m *Meter) Total() time.Duration {
	m.Stop()
	return m.total
}

// Report stops m and reports "cpu-ns/op" and, when entries > 0,
// "entries/cpu-s": entries processed per second of CPU time.
func (m *Meter) Report(b *testing.B, entries int) {
	t := m.Total()
	if t <= 0 || b.N == 0 {
		return
	}
	b.ReportMetric(float64(t.Nanoseconds())/float64(b.N), "cpu-ns/op")
	if entries > 0 {
		b.ReportMetric(float64(entries)/t.Seconds(), "entries/cpu-s")
	}
}
