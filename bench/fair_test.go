package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	imafsfs "github.com/imafs/imafs/fs"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
)

// floodReaders and floodEntries: the flood of issue 11 (16 concurrent
// readers of a 3.3 MB list).
const (
	floodReaders = 16
	floodEntries = 20000
	quietEntries = 2000
)

// BenchmarkFloodFairness: a quiet container's small read (open, read to the
// end, close of its own 2-entry ascii list) idle and while a flooding
// container runs
// 16 concurrent readers of its ~3.3 MB list, each container with its own
// FUSE mount as under `imafs serve`; with the per-namespace read bound
// (fair=on, fs.DefaultReadsPerNamespace) and without it (fair=off, imafs
// before issue 11), side by side in this run. Reports the quiet read's
// median idle and flooded (us) and their ratio (flooded/idle, the issue
// asks ≤ 1.5; also of the means and 99th percentiles: a flood shows in the
// tail first), the median ratio for a second quiet container's 2,000-entry
// list (~320 KB, "-2k"), and the flood's throughput.
func BenchmarkFloodFairness(b *testing.B) {
	reg := serve(b).reg
	attach := func(id string, entries int) (int, *imans.Namespace) {
		pid := harness.StartSleeper(b).Pid
		ns, err := reg.Attach(id, pid, []byte(`{"ociVersion":"1.0.2"}`))
		if err != nil {
			b.Fatal(err)
		}
		fill(b, reg, ns, entries)
		return pid, ns
	}
	floodPid, floodNS := attach("flood", floodEntries)
	// Two quiet containers: a small read (their 2-entry list, what the
	// issue's 1.5x is about) and a 2,000-entry list (~320 KB).
	smallPid, smallNS := attach("quiet", 0)
	bigPid, bigNS := attach("quiet-2k", quietEntries)
	for _, fair := range []struct {
		name string
		f    *imafsfs.Fairness
	}{{"off", imafsfs.NewFairness(0)}, {"on", imafsfs.NewFairness(imafsfs.DefaultReadsPerNamespace)}} {
		floodFile := filepath.Join(mountFor(b, reg, floodNS, fair.f), "ima/ascii_runtime_measurements")
		smallFile := filepath.Join(mountFor(b, reg, smallNS, fair.f), "ima/ascii_runtime_measurements")
		bigFile := filepath.Join(mountFor(b, reg, bigNS, fair.f), "ima/ascii_runtime_measurements")
		b.Run("fair="+fair.name, func(b *testing.B) {
			idle := latency(b, smallPid, smallFile, b.N)
			idleBig := latency(b, bigPid, bigFile, max(1, b.N/10))
			stop := flood(b, floodPid, floodFile)
			start := time.Now()
			flooded := latency(b, smallPid, smallFile, b.N)
			floodedBig := latency(b, bigPid, bigFile, max(1, b.N/10))
			took := time.Since(start)
			total := stop()
			if total == 0 {
				b.Fatal("the flood read nothing")
			}
			b.ReportMetric(idle.p50/1e3, "idle-us")
			b.ReportMetric(flooded.p50/1e3, "flooded-us")
			b.ReportMetric(flooded.p50/idle.p50, "flooded/idle")
			b.ReportMetric(flooded.mean/idle.mean, "flooded/idle-mean")
			b.ReportMetric(flooded.p99/idle.p99, "flooded/idle-p99")
			b.ReportMetric(idleBig.p50/1e3, "idle-2k-us")
			b.ReportMetric(floodedBig.p50/1e3, "flooded-2k-us")
			b.ReportMetric(floodedBig.p50/idleBig.p50, "flooded/idle-2k")
			b.ReportMetric(float64(total)/1e6/took.Seconds(), "flood-MB/s")
		})
	}
}

// mountFor mounts a tree owned by ns (as the daemon mounts one per
// container) on a temp dir, reads bounded by fair.
func mountFor(b *testing.B, reg *imans.Registry, ns *imans.Namespace, fair *imafsfs.Fairness) string {
	b.Helper()
	dir := harness.TempDir(b)
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	srv, err := imafsfs.Mount(dir, imafsfs.NewRoot(imafsfs.Options{Registry: reg, Log: log, Owner: ns, Fair: fair}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if srv.Unmount() != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// helper runs this test binary's helper test name in the pid namespace of
// pid with env.
func helper(pid int, name string, env ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", "--target", strconv.Itoa(pid), "--pid", "--",
		os.Args[0], "-test.run=^"+name+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// lat is the latency of a series of reads: median, mean and 99th
// percentile, in ns.
type lat struct{ p50, mean, p99 float64 }

// latency times n open+read+close of file in pid's container.
func latency(b *testing.B, pid int, file string, n int) lat {
	b.Helper()
	out, err := helper(pid, "TestLatencyHelper", "BENCH_LAT_FILE="+file, "BENCH_LAT_N="+strconv.Itoa(n)).CombinedOutput()
	p50, ok1 := lineValue(string(out), "LAT p50 ")
	mean, ok2 := lineValue(string(out), "LAT mean ")
	p99, ok3 := lineValue(string(out), "LAT p99 ")
	if err != nil || !ok1 || !ok2 || !ok3 {
		b.Fatalf("latency in container: %v: %s", err, out)
	}
	return lat{p50, mean, p99}
}

// lineValue returns the number after prefix on a line of out.
func lineValue(out, prefix string) (float64, bool) {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// flood starts floodReaders readers of file in pid's container; stop ends
// them and returns the bytes they read.
func flood(b *testing.B, pid int, file string) (stop func() int64) {
	b.Helper()
	cmd := helper(pid, "TestFloodHelper", "BENCH_FLOOD_FILE="+file, "BENCH_FLOOD_READERS="+strconv.Itoa(floodReaders))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var once sync.Once
	var total int64
	stop = func() int64 {
		once.Do(func() {
			stdin.Close() // the helper stops at EOF on stdin
			if err := cmd.Wait(); err != nil {
				b.Errorf("flood: %v: %s", err, out.String())
			}
			v, _ := lineValue(out.String(), "FLOOD ")
			total = int64(v)
		})
		return total
	}
	b.Cleanup(func() { stop() })
	time.Sleep(500 * time.Millisecond) // every reader is in its loop
	return stop
}

// TestLatencyHelper is not a test: BenchmarkFloodFairness runs it in the
// quiet container to time open, read to the end and close of BENCH_LAT_FILE
// (median, mean, 99th percentile).
func TestLatencyHelper(t *testing.T) {
	path := os.Getenv("BENCH_LAT_FILE")
	if path == "" {
		t.Skip("helper for BenchmarkFloodFairness")
	}
	n, _ := strconv.Atoi(os.Getenv("BENCH_LAT_N"))
	buf := make([]byte, 64<<10)
	runtime.LockOSThread()
	times := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for got := 0; ; got++ {
			k, err := unix.Read(fd, buf)
			if err != nil || (k == 0 && got == 0) {
				t.Fatalf("read: %d, %v", k, err)
			}
			if k == 0 {
				break
			}
		}
		unix.Close(fd)
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	var sum time.Duration
	for _, d := range times {
		sum += d
	}
	fmt.Printf("LAT p50 %d\nLAT mean %d\nLAT p99 %d\n", times[len(times)/2].Nanoseconds(),
		sum.Nanoseconds()/int64(n), times[len(times)*99/100].Nanoseconds())
}

// TestFloodHelper is not a test: BenchmarkFloodFairness runs it in the
// flooding container: BENCH_FLOOD_READERS threads read BENCH_FLOOD_FILE
// whole, again and again, until stdin ends.
func TestFloodHelper(t *testing.T) {
	path := os.Getenv("BENCH_FLOOD_FILE")
	if path == "" {
		t.Skip("helper for BenchmarkFloodFairness")
	}
	readers, _ := strconv.Atoi(os.Getenv("BENCH_FLOOD_READERS"))
	var done atomic.Bool
	var total atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			buf := make([]byte, 128<<10)
			for !done.Load() {
				fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Error(err)
					return
				}
				for !done.Load() {
					k, err := unix.Read(fd, buf)
					if err == syscall.EINTR {
						continue
					}
					if err != nil {
						t.Error(err)
						break
					}
					if k == 0 {
						break
					}
					total.Add(int64(k))
				}
				unix.Close(fd)
			}
		}()
	}
	os.Stdin.Read(make([]byte, 1)) // until the benchmark closes it
	done.Store(true)
	wg.Wait()
	fmt.Printf("FLOOD %d\n", total.Load())
}
