//go:build bench

package mmapsrcbench

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// daemonRounds is the number of rounds of each daemon benchmark (medians
// reported; watched and unwatched runs alternate within a round).
const daemonRounds = 21

// pythonRounds is the number of rounds of TestMmapPythonBench.
const pythonRounds = 21

// mmapDaemon is `imafs serve --fanotify=false --mmap=on` with every
// container starting with `measure func=MMAP_CHECK mask=MAY_EXEC`, and a
// host view mounted (the host list holds every container's entries).
type mmapDaemon struct {
	bin, sock, host string
	journal         string // the host journal: grows when an entry is recorded
	pid             int
	seq             int
}

func startMmapDaemon(t *testing.T) *mmapDaemon {
	harness.RequireRoot(t)
	dir := harness.TempDir(t)
	d := &mmapDaemon{bin: filepath.Join(dir, "imafs"), sock: filepath.Join(dir, "imafs.sock"), host: filepath.Join(dir, "host")}
	if out, err := exec.Command("go", "build", "-o", d.bin, "github.com/imafs/imafs/cmd/imafs").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	d.journal = filepath.Join(dir, "state", "host.journal")
	pol := filepath.Join(dir, "policy")
	os.WriteFile(pol, []byte("measure func=MMAP_CHECK mask=MAY_EXEC\n"), 0o644)
	os.Mkdir(d.host, 0o755)
	cmd := exec.Command(d.bin, "serve", "--socket", d.sock, "--state-dir", filepath.Join(dir, "state"), "--log-level", "warn",
		"--fanotify=false", "--mmap=on", "--container-policy", pol, "--mount", d.host)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.pid = cmd.Process.Pid
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		syscall.Unmount(d.host, syscall.MNT_DETACH)
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := d.imafs("ps"); err == nil {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatal("daemon not ready")
		}
	}
}

func (d *mmapDaemon) imafs(sub string, args ...string) (string, error) {
	out, err := exec.Command(d.bin, append([]string{sub, "--socket", d.sock}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("imafs %s %v: %w: %s", sub, args, err, out)
	}
	return string(out), nil
}

// attach attaches the container whose init is pid under a new id.
func (d *mmapDaemon) attach(t *testing.T, pid int) string {
	d.seq++
	id := fmt.Sprintf("bench-%d", d.seq)
	if _, err := d.imafs("attach", "--pid", fmt.Sprint(pid), "--id", id); err != nil {
		t.Fatal(err)
	}
	return id
}

// cpu is the daemon's CPU time so far: the sum of its threads' time on a
// CPU (schedstat, nanoseconds).
func (d *mmapDaemon) cpu(t *testing.T) time.Duration {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", d.pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("daemon threads: %v", err)
	}
	var sum time.Duration
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that exited
		}
		if v, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64); err == nil {
			sum += time.Duration(v)
		}
	}
	return sum
}

// journalSize is the host journal's size.
func (d *mmapDaemon) journalSize(t *testing.T) int64 {
	fi, err := os.Stat(d.journal)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// waitListed waits until the host list holds an entry with digest (hex)
// and returns when it was seen there. It polls the host journal's size
// (size before the mapping) until the daemon journals an entry, which
// costs the daemon nothing (a poll of its FUSE files every millisecond
// while it hashes would take its CPU), then the list until the entry is
// listed (after the journal's fsync).
func (d *mmapDaemon) waitListed(t *testing.T, size int64, digest string) time.Time {
	list := filepath.Join(d.host, "ima/ascii_runtime_measurements")
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Microsecond) {
		if d.journalSize(t) == size {
			continue
		}
		// Journaled; listed once fsynced, a moment later.
		for range 5000 {
			b, err := os.ReadFile(list)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), digest) {
				return time.Now()
			}
			time.Sleep(time.Millisecond)
		}
		size = d.journalSize(t)
	}
	t.Fatalf("no entry sha256:%s in the host list within 60s", digest)
	return time.Time{}
}

// runPython runs python3 -c 'import ssl' in the pid and mount namespaces
// of pid and returns its elapsed and CPU time (user + system of nsenter
// and python, which nsenter waits for).
func runPython(t *testing.T, pid int) (wall, cpu time.Duration) {
	start := time.Now()
	cmd := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-p", "-m", "--", "/usr/bin/python3", "-c", "import ssl")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	return time.Since(start), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// TestMmapPythonBench: `python3 -c 'import ssl'` started cold in a watched
// container (attached just before: ld.so's libraries and the dlopen'ed
// _ssl module with libssl and libcrypto are all first mappings, reported,
// hashed and recorded by the daemon) against the same in an unwatched one,
// alternately, in the same run of the daemon. CPU time of the run (the
// machine's load does not count) and elapsed time; the daemon's hashing
// runs beside it (the tracepoint does not make the mapping wait). It also
// counts the runs whose libcrypto mapping could not be measured (python had
// exited before the source opened the mapping: a <mmap-unmeasured>
// violation).
func TestMmapPythonBench(t *testing.T) {
	harness.RequireTools(t, "nsenter", "/usr/bin/python3")
	d := startMmapDaemon(t)
	var wallW, wallU, cpuW, cpuU, rWall, rCPU, listed []float64
	unmeasured := 0
	ms := func(x time.Duration) float64 { return float64(x) / 1e6 }
	for i := range pythonRounds {
		w, u := harness.StartSleeper(t, "--mount"), harness.StartSleeper(t, "--mount")
		id := d.attach(t, w.Pid)
		runPython(t, u.Pid) // page cache and dentries warm for both
		var tw, tu, cw, cu time.Duration
		if i%2 == 0 {
			tw, cw = runPython(t, w.Pid)
			tu, cu = runPython(t, u.Pid)
		} else {
			tu, cu = runPython(t, u.Pid)
			tw, cw = runPython(t, w.Pid)
		}
		begin := time.Now()
		if !d.waitListedName(t, id, "libcrypto.so.3") {
			unmeasured++
		}
		listed = append(listed, ms(time.Since(begin)))
		wallW, wallU, cpuW, cpuU = append(wallW, ms(tw)), append(wallU, ms(tu)), append(cpuW, ms(cw)), append(cpuU, ms(cu))
		rWall, rCPU = append(rWall, float64(tw)/float64(tu)), append(rCPU, float64(cw)/float64(cu))
		d.imafs("detach", "--id", id)
		w.Stop()
		u.Stop()
	}
	fmt.Printf("  python3 -c 'import ssl', unwatched container: %.1f ms CPU (elapsed %.1f ms)\n", median(cpuU), median(wallU))
	fmt.Printf("  python3 -c 'import ssl', watched container, cold (first mappings): %.1f ms CPU (elapsed %.1f ms); ratio %.3f (elapsed: ratio %.3f)\n",
		median(cpuW), median(wallW), median(rCPU), median(rWall))
	fmt.Printf("  python3 -c 'import ssl', libcrypto listed after the run ended: %.1f ms; runs with libcrypto unmeasured (violation): %d of %d\n",
		median(listed), unmeasured, pythonRounds)
	t.Logf("%d rounds: CPU watched %.1f unwatched %.1f ms, ratios %.3f; elapsed ratios %.3f", pythonRounds, cpuW, cpuU, rCPU, rWall)
}

// waitListedName waits until container id's list names a file ending in
// suffix (true) or holds a <mmap-unmeasured> violation (false).
func (d *mmapDaemon) waitListedName(t *testing.T, id, suffix string) bool {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		out, err := d.imafs("log", id)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, suffix+"\n") {
			return true
		}
		if strings.Contains(out, "<mmap-unmeasured>") {
			return false
		}
	}
	t.Fatalf("%s: no entry for %s and no violation within 60s", id, suffix)
	return false
}

// TestMmapBigLibraryBench: the first mapping of a 100 MiB library by a
// watched container, from the mmap call to its entry in the list, against
// `openssl dgst -sha256` of the same file (page cache warm for both), in
// the same round; each round writes new content, so each mapping is a
// first one.
func TestMmapBigLibraryBench(t *testing.T) {
	harness.RequireTools(t, "openssl", "gcc")
	d := startMmapDaemon(t)
	bin, _, err := harness.BuildMapper(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := harness.StartMapper(t, bin)
	d.attach(t, m.Pid)
	lib := filepath.Join(harness.TempDir(t), "libbig.so")
	buf := make([]byte, 100<<20)
	var first, openssl, ratios, firstCPU, opensslCPU, cpuRatios []float64
	ms := func(x time.Duration) float64 { return float64(x) / 1e6 }
	for i := range daemonRounds {
		rand.Read(buf)
		if err := os.WriteFile(lib, buf, 0o755); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(buf)
		digest := hex.EncodeToString(sum[:])
		hashOpenssl := func() (wall, cpu time.Duration) {
			start := time.Now()
			cmd := exec.Command("openssl", "dgst", "-sha256", lib)
			out, err := cmd.Output()
			if err != nil || !strings.Contains(string(out), digest) {
				t.Fatalf("openssl dgst: %v %s", err, out)
			}
			return time.Since(start), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		}
		mapFirst := func() (wall, cpu time.Duration) {
			size := d.journalSize(t)
			c0 := d.cpu(t)
			start := time.Now()
			m.Do(t, "mmapx "+lib)
			at := d.waitListed(t, size, digest)
			c1 := d.cpu(t) // includes the one list read of the check
			return at.Sub(start), c1 - c0
		}
		var tf, to, cf, co time.Duration
		if i%2 == 0 {
			to, co = hashOpenssl()
			tf, cf = mapFirst()
		} else {
			tf, cf = mapFirst()
			to, co = hashOpenssl()
		}
		first, openssl = append(first, ms(tf)), append(openssl, ms(to))
		firstCPU, opensslCPU = append(firstCPU, ms(cf)), append(opensslCPU, ms(co))
		ratios, cpuRatios = append(ratios, float64(tf)/float64(to)), append(cpuRatios, float64(cf)/float64(co))
	}
	fmt.Printf("  100 MiB library, openssl dgst -sha256: %.1f ms (CPU %.1f ms)\n", median(openssl), median(opensslCPU))
	fmt.Printf("  100 MiB library, first mapping to its entry in the list: %.1f ms; ratio %.3f (daemon CPU %.1f ms: ratio %.3f)\n",
		median(first), median(ratios), median(firstCPU), median(cpuRatios))
	t.Logf("%d rounds: first mapping %.1f ms, openssl %.1f ms, ratios %.3f; CPU %.1f vs %.1f ms, ratios %.3f",
		daemonRounds, first, openssl, ratios, firstCPU, opensslCPU, cpuRatios)
}
