package bench

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	imafsfs "github.com/imafs/imafs/fs"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/internal/cputime"
	"github.com/imafs/imafs/measurelog"
)

type server struct {
	reg *imans.Registry
	dir string
	ima string
}

// serve mounts a tree on a temp dir (host view for us).
func serve(b *testing.B) *server { return serveState(b, "") }

// serveState is serve with the registry's lists journaled in stateDir
// ("": kept in memory), as `imafs serve --state-dir` keeps them.
func serveState(b *testing.B, stateDir string) *server {
	b.Helper()
	harness.RequireRoot(b)
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	reg, err := imans.NewRegistry(imans.Options{Log: log, StateDir: stateDir})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { reg.Close() })
	dir := b.TempDir()
	srv, err := imafsfs.Mount(dir, imafsfs.NewRoot(imafsfs.Options{Registry: reg, Log: log}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if srv.Unmount() != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return &server{reg: reg, dir: dir, ima: filepath.Join(dir, "ima")}
}

// fill records n synthetic ima-ng file measurements in ns, in batches of
// 1,024 (RecordAll: one write and fsync per batch with a state directory).
func fill(b *testing.B, reg *imans.Registry, ns *imans.Namespace, n int) {
	b.Helper()
	var seed [8]byte
	var items []imans.Item
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint64(seed[:], uint64(i))
		d := sha256.Sum256(seed[:])
		e, err := measurelog.NewEntry("ima-ng", 10, measurelog.Measurement{
			FileDigest: d[:], FileAlgo: measurelog.SHA256,
			Name: fmt.Sprintf("/usr/lib/x86_64-linux-gnu/lib%06d.so.1", i),
		})
		if err != nil {
			b.Fatal(err)
		}
		items = append(items, imans.Item{NS: ns, Entry: e})
		if len(items) == 1024 || i == n-1 {
			if err := reg.RecordAll(items); err != nil {
				b.Fatal(err)
			}
			items = items[:0]
		}
	}
}

// BenchmarkBulkCat100k: `cat` of a 100,000-entry ascii list (a new process
// each time) through imafs and from tmpfs.
func BenchmarkBulkCat100k(b *testing.B) { bulkCat(b, 100000, false) }

// BenchmarkBulkCat1M: `cat` of a 1,000,000-entry host ascii list (~166 MB)
// through imafs and from tmpfs (issue 14).
func BenchmarkBulkCat1M(b *testing.B) { bulkCat(b, 1000000, false) }

// BenchmarkBulkCat1MJournal: the same with the list journaled in a state
// directory, as `imafs serve` keeps it: rendered from the journal's
// records (pread), not from memory.
func BenchmarkBulkCat1MJournal(b *testing.B) { bulkCat(b, 1000000, true) }

// bulkCat times `cat` of an n-entry host ascii list through imafs and of
// the same bytes on tmpfs, side by side.
func bulkCat(b *testing.B, n int, journal bool) {
	state := ""
	if journal {
		state = b.TempDir()
	}
	s := serveState(b, state)
	fill(b, s.reg, s.reg.Host(), n-1) // and the boot_aggregate
	src := filepath.Join(s.ima, "ascii_runtime_measurements")
	data, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	tmp := b.TempDir()
	if err := unix.Mount("tmpfs", tmp, "tmpfs", 0, "size="+strconv.Itoa(len(data)/(1<<20)+16)+"m"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Unmount(tmp, unix.MNT_DETACH) })
	copyPath := filepath.Join(tmp, "ascii_runtime_measurements")
	if err := os.WriteFile(copyPath, data, 0o440); err != nil {
		b.Fatal(err)
	}
	size := int64(len(data))
	data = nil
	// cat writes to /dev/null (no pipe copy in either figure); what it
	// reads is checked once, outside the timing.
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	for _, c := range []struct{ name, path string }{{"imafs", src}, {"tmpfs", copyPath}} {
		b.Run(c.name, func(b *testing.B) {
			cmd := exec.Command("cat", c.path)
			var out countWriter
			cmd.Stdout = &out
			if err := cmd.Run(); err != nil || out.n != size {
				b.Fatalf("cat %s: %v, read %d bytes, want %d", c.path, err, out.n, size)
			}
			b.SetBytes(size)
			b.ResetTimer()
			cpu := cpuWithChildren()
			for i := 0; i < b.N; i++ {
				cmd := exec.Command("cat", c.path)
				cmd.Stdout = devnull
				if err := cmd.Run(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuWithChildren()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuWithChildren is the CPU time (user + system) of this process (the
// daemon's side of imafs, the test) and of its reaped children (cat): what
// a bulk read costs the machine, whatever the load makes it wait.
func cpuWithChildren() int64 {
	var self, children unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &self)
	unix.Getrusage(unix.RUSAGE_CHILDREN, &children)
	return self.Utime.Nano() + self.Stime.Nano() + children.Utime.Nano() + children.Stime.Nano()
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// openReadClose is one open+read+close with raw system calls.
func openReadClose(b *testing.B, path string, buf []byte) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatalf("open %s: %v", path, err)
	}
	n, err := unix.Read(fd, buf)
	if err != nil || n == 0 {
		b.Fatalf("read %s: %d, %v", path, n, err)
	}
	unix.Close(fd)
}

// startLXCFS runs a private lxcfs on a temp dir and returns its mount point.
func startLXCFS(b *testing.B) string {
	b.Helper()
	bin, err := exec.LookPath("lxcfs")
	if err != nil {
		b.Skip("lxcfs not installed")
	}
	dir := b.TempDir()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	cmd := exec.Command(bin, "-f", "-p", filepath.Join(dir, "lxcfs.pid"), mnt)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		unix.Unmount(mnt, unix.MNT_DETACH)
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.ReadFile(filepath.Join(mnt, "proc/uptime")); err == nil {
			return mnt
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatal("lxcfs did not come up")
	return ""
}

// BenchmarkOpenReadClose: runtime_measurements_count through imafs vs
// LXCFS's /proc/uptime vs the kernel's /proc/self/stat and /proc/uptime.
func BenchmarkOpenReadClose(b *testing.B) {
	s := serve(b)
	lx := startLXCFS(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 4096)
	for _, c := range []struct{ name, path string }{
		{"imafs_count", filepath.Join(s.ima, "runtime_measurements_count")},
		{"lxcfs_uptime", filepath.Join(lx, "proc/uptime")},
		{"kernel_self_stat", "/proc/self/stat"},
		{"kernel_uptime", "/proc/uptime"},
	} {
		b.Run(c.name, func(b *testing.B) {
			openReadClose(b, c.path, buf)
			b.ResetTimer()
			var cpu cputime.Meter
			cpu.Start()
			for i := 0; i < b.N; i++ {
				openReadClose(b, c.path, buf)
			}
			cpu.Report(b, 0) // imafs's daemon side is in this process, lxcfs's is not
		})
	}
}

// TestLoopHelper is not a test: BenchmarkContainers re-runs the test binary
// inside a container with BENCH_LOOP_FILE set to time open+read+close there.
func TestLoopHelper(t *testing.T) {
	path := os.Getenv("BENCH_LOOP_FILE")
	if path == "" {
		t.Skip("helper for BenchmarkContainers")
	}
	n, _ := strconv.Atoi(os.Getenv("BENCH_LOOP_N"))
	buf := make([]byte, 4096)
	runtime.LockOSThread()
	start := time.Now()
	for i := 0; i < n; i++ {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if k, err := unix.Read(fd, buf); err != nil || k == 0 {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	fmt.Printf("LOOP %d\n", time.Since(start).Nanoseconds()/int64(n))
}

// BenchmarkContainers: open+read+close of runtime_measurements_count from
// inside a container with 1 and 1,000 containers attached; reports the
// registry's heap per attached container.
func BenchmarkContainers(b *testing.B) {
	s := serve(b)
	count := filepath.Join(s.ima, "runtime_measurements_count")
	var pids []int
	attach := func(n int) {
		for len(pids) < n {
			pid := harness.StartSleeper(b).Pid
			if _, err := s.reg.Attach("c"+strconv.Itoa(len(pids)), pid, []byte(`{"ociVersion":"1.0.2"}`)); err != nil {
				b.Fatal(err)
			}
			pids = append(pids, pid)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for _, n := range []int{1, 1000} {
		attach(n)
		perNS := float64(heap()-before) / float64(n)
		b.Run(fmt.Sprintf("attached=%d", n), func(b *testing.B) {
			loops := b.N
			cmd := exec.Command("nsenter", "--target", strconv.Itoa(pids[0]), "--pid", "--",
				os.Args[0], "-test.run=^TestLoopHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), "BENCH_LOOP_FILE="+count, "BENCH_LOOP_N="+strconv.Itoa(loops))
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("loop in container: %v: %s", err, out)
			}
			var ns int64
			for _, l := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(l, "LOOP "); ok {
					ns, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				}
			}
			if ns == 0 {
				b.Fatalf("no timing from the container: %s", out)
			}
			b.ReportMetric(float64(ns), "container-ns/op")
			b.ReportMetric(perNS, "heap-B/container")
		})
	}
}
