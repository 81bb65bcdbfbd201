package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imafs/imafs/control"
	"github.com/imafs/imafs/integration/harness"
)

// rssKiB returns VmRSS of pid.
func rssKiB(b *testing.B, pid int) int64 { return statusKiB(b, pid, "VmRSS:") }

// statusKiB returns the kB figure of key ("VmRSS:", "VmHWM:") in
// /proc/PID/status.
func statusKiB(b *testing.B, pid int, key string) int64 {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	b.Fatalf("no %s", key)
	return 0
}

// procCPU returns the CPU time (user + system) pid has used, in ns.
func procCPU(b *testing.B, pid int) int64 {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15.
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stm, _ := strconv.ParseInt(f[12], 10, 64)
	return (ut + stm) * int64(time.Second) / 100 // USER_HZ
}

// startDaemon builds imafs and runs `imafs serve` with a private socket and
// state directory (and extra flags) until cleanup; it returns once the
// daemon answers. The measurement sources (on by default) are off: these
// benchmarks measure the tree, and their containers share the host's root
// file system, where no fanotify permission mark belongs.
func startDaemon(b *testing.B, extra ...string) (*exec.Cmd, *control.Client) {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "imafs")
	if prebuilt := os.Getenv("BENCH_IMAFS_BIN"); prebuilt != "" {
		bin = prebuilt // another tree's daemon (bench/run --baseline)
	} else if out, err := exec.Command("go", "build", "-o", bin, "github.com/imafs/imafs/cmd/imafs").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "imafs.sock")
	args := append([]string{"serve", "--socket", sock, "--state-dir", filepath.Join(dir, "state"), "--log-level", "warn", "--fanotify=false", "--mmap=off"}, extra...)
	daemon := exec.Command(bin, args...)
	if err := daemon.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		daemon.Process.Signal(syscall.SIGTERM)
		daemon.Wait()
	})
	client := control.NewClient(sock)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := client.Call(context.Background(), &control.Request{Op: control.OpPing}); err == nil {
			return daemon, client
		}
		if time.Now().After(deadline) {
			b.Fatal("daemon not ready")
		}
	}
}

// BenchmarkDaemonAttached: the real daemon (imafs serve) with N containers
// attached, each with its own FUSE mount in its own mount namespace
// (BENCH_CONTAINERS, default 1000): the daemon's RSS per container, and
// open+read+close in a container with 1 and with N attached.
func BenchmarkDaemonAttached(b *testing.B) {
	harness.RequireRoot(b)
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("BENCH_CONTAINERS")); err == nil && v > 0 {
		n = v
	}
	daemon, client := startDaemon(b)
	base := rssKiB(b, daemon.Process.Pid)
	baseAnon := statusKiB(b, daemon.Process.Pid, "RssAnon:")
	var pids []int
	attach := func(upto int) {
		for len(pids) < upto {
			pid := harness.StartSleeper(b, "--mount").Pid
			id := "c" + strconv.Itoa(len(pids))
			if _, err := client.Call(context.Background(), &control.Request{Op: control.OpAttach, ID: id, Pid: pid}); err != nil {
				b.Fatalf("attach %s: %v", id, err)
			}
			pids = append(pids, pid)
		}
	}
	// loop returns the wall time of an open+read+close in the container,
	// and the CPU time it cost the daemon and the container's side.
	loop := func(b *testing.B, pid int) (wall, daemonCPU, loopCPU float64) {
		cmd := exec.Command("nsenter", "--target", strconv.Itoa(pid), "--pid", "--mount", "--",
			os.Args[0], "-test.run=^TestLoopHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), "BENCH_LOOP_FILE=/sys/kernel/security/ima/runtime_measurements_count", "BENCH_LOOP_N="+strconv.Itoa(b.N))
		cpu0 := procCPU(b, daemon.Process.Pid)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("loop in container: %v: %s", err, out)
		}
		daemonCPU = float64(procCPU(b, daemon.Process.Pid)-cpu0) / float64(b.N)
		loopCPU = float64(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()) / float64(b.N)
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "LOOP "); ok {
				wall, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
				return wall, daemonCPU, loopCPU
			}
		}
		b.Fatalf("no timing: %s", out)
		return 0, 0, 0
	}
	for _, upto := range []int{1, n} {
		start := time.Now()
		attach(upto)
		took := time.Since(start)
		rss := rssKiB(b, daemon.Process.Pid)
		anon := statusKiB(b, daemon.Process.Pid, "RssAnon:")
		b.Run(fmt.Sprintf("attached=%d", upto), func(b *testing.B) {
			wall, daemonCPU, loopCPU := loop(b, pids[0])
			b.ReportMetric(wall, "container-ns/op")
			b.ReportMetric(daemonCPU, "daemon-cpu-ns/op")
			b.ReportMetric(daemonCPU+loopCPU, "cpu-ns/op")
			b.ReportMetric(float64(statusKiB(b, daemon.Process.Pid, "Threads:"))/float64(upto), "threads/container")
			b.ReportMetric(float64(rss-base)/float64(upto), "rss-KiB/container")
			b.ReportMetric(float64(anon-baseAnon)/float64(upto), "rssanon-KiB/container")
			b.ReportMetric(float64(took.Microseconds())/float64(upto)/1000, "spawn+attach-ms")
		})
	}
}
