//go:build bench

package mmapsrcbench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/mmapsrc"
)

const (
	maps   = 20000
	rounds = 11
)

// loop returns the CPU time of one mmap+munmap in the mapper's loop (the
// mapper thread's CPU clock: the kernel's and the BPF programs' work,
// without the waits of a loaded machine) and its elapsed time.
func loop(t *testing.T, m *harness.Mapper, lib string) (cpu, wall time.Duration) {
	f := strings.Fields(m.Do(t, fmt.Sprintf("loop %s %d", lib, maps)))
	if len(f) != 2 {
		t.Fatalf("loop answered %q", f)
	}
	w, err1 := strconv.ParseInt(f[0], 10, 64)
	c, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("loop answered %q", f)
	}
	return time.Duration(c / maps), time.Duration(w / maps)
}

func median[T float64 | time.Duration](d []T) T {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// sample is one round: CPU and elapsed time per map.
type sample struct{ cpu, wall time.Duration }

func TestMmapSourceBench(t *testing.T) {
	harness.RequireRoot(t)
	bin, lib, err := harness.BuildMapper(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	watched, other := harness.StartMapper(t, bin), harness.StartMapper(t, bin)
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	var detached, attached, unwatched []sample
	var progNs []float64         // per round: BPF run time per map of the attached loop
	var ratioA, ratioU []float64 // per round: neighbours in time
	for i := range rounds {
		var d sample
		if i%2 == 0 { // alternate the order against drift
			d.cpu, d.wall = loop(t, watched, lib)
		}
		a, u, p := attachedRound(t, log, watched, other, lib)
		progNs = append(progNs, p)
		if i%2 == 1 {
			d.cpu, d.wall = loop(t, watched, lib)
		}
		detached, attached, unwatched = append(detached, d), append(attached, a), append(unwatched, u)
		ratioA = append(ratioA, float64(a.cpu)/float64(d.cpu))
		ratioU = append(ratioU, float64(u.cpu)/float64(d.cpu))
	}
	cpu := func(s []sample) (out []time.Duration) {
		for _, x := range s {
			out = append(out, x.cpu)
		}
		return out
	}
	wall := func(s []sample) (out []time.Duration) {
		for _, x := range s {
			out = append(out, x.wall)
		}
		return out
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	d, a, u := median(cpu(detached)), median(cpu(attached)), median(cpu(unwatched))
	fmt.Printf("  mmap(PROT_EXEC)+munmap, source detached: %.3f us/map (CPU; elapsed %.3f us)\n", us(d), us(median(wall(detached))))
	fmt.Printf("  mmap(PROT_EXEC)+munmap, source attached, already reported: %.3f us/map (CPU; elapsed %.3f us); ratio %.3f\n", us(a), us(median(wall(attached))), median(ratioA))
	fmt.Printf("  mmap(PROT_EXEC)+munmap, source attached, task not watched: %.3f us/map (CPU; elapsed %.3f us); ratio %.3f\n", us(u), us(median(wall(unwatched))), median(ratioU))
	fmt.Printf("  BPF programs' own run time per mmap+munmap (already reported): %.0f ns; ratio %.3f (detached + this)\n",
		median(progNs), 1+median(progNs)/float64(d))
	t.Logf("%d rounds of %d maps, CPU per map: detached %v, attached %v, unwatched %v; ratios %.3f, %.3f",
		rounds, maps, cpu(detached), cpu(attached), cpu(unwatched), ratioA, ratioU)
}

// attachedRound opens a source watching the watched mapper's pid
// namespace, has the library reported once, and runs the loop in both
// mappers.
// It also returns the programs' run time per map, from one more loop of
// the watched mapper with the kernel's BPF run time statistics on (they
// cost a clock read per run, so the timed loops run without them).
func attachedRound(t *testing.T, log *logrus.Logger, watched, other *harness.Mapper, lib string) (a, u sample, progNs float64) {
	s, err := mmapsrc.Open(mmapsrc.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	go func() { // receive (and close) what is reported
		for ev := range s.Events() {
			if ev.File != nil {
				ev.File.Close()
			}
		}
	}()
	if _, err := s.Watch(watched.PidNS); err != nil {
		t.Fatal(err)
	}
	watched.Do(t, "mmapx "+lib) // reported once; the loop's maps are not
	a.cpu, a.wall = loop(t, watched, lib)
	u.cpu, u.wall = loop(t, other, lib)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enable BPF run time stats: %v", err)
	}
	before := progTime(t, s)
	loop(t, watched, lib)
	progNs = float64(progTime(t, s)-before) / maps
	stats.Close()
	if st := s.Stats(); st.Reported != 1 || st.Lost != 0 {
		t.Errorf("stats of an attached round: %+v, want the library reported once", st)
	}
	return a, u, progNs
}

// progTime is the total run time of the source's programs.
func progTime(t *testing.T, s *mmapsrc.Source) time.Duration {
	st, err := s.ProgramStats()
	if err != nil {
		t.Fatal(err)
	}
	var d time.Duration
	for _, p := range st {
		d += p.Runtime
	}
	return d
}
