package vtpm

import (
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/measurelog"
)

// needSWTPM skips when swtpm is not installed (CI installs Debian swtpm).
func needSWTPM(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed (apt-get install -y --no-install-recommends swtpm swtpm-tools)")
	}
}

// startNS starts a namespace's swtpm on a fresh state directory and
// resyncs it with no entries; the swtpm process is stopped at cleanup.
func startNS(t *testing.T, id string, list EntrySource) *SWTPM {
	t.Helper()
	return startNSIn(t, id, t.TempDir(), list)
}

func startNSIn(t *testing.T, id, dir string, list EntrySource) *SWTPM {
	t.Helper()
	needSWTPM(t)
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	v, err := StartSWTPM(SWTPMOptions{ID: id, StateDir: dir, List: list, Log: log})
	if err != nil {
		t.Fatalf("StartSWTPM(%s): %v", id, err)
	}
	pid := v.Pid()
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("close swtpm %s: %v", id, err)
		}
		assertGone(t, pid)
	})
	return v
}

// assertGone fails if process pid still exists (it was reaped by Close).
func assertGone(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("swtpm pid %d still running after Close", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// startRawSWTPM runs a swtpm with only a server socket, the way an
// operator would for the daemon's --tpm option; killed by pid at cleanup.
func startRawSWTPM(t *testing.T) string {
	t.Helper()
	needSWTPM(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "tpm.sock")
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+dir,
		"--server", "type=unixio,path="+sock,
		"--flags", "not-need-init,startup-clear")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("swtpm pid %d not reaped", cmd.Process.Pid)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The socket file appears at bind(2), before listen(2): only a
		// connection proves swtpm is ready (it accepts again after this
		// probe closes).
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.Dial("unix", sock); err == nil {
				c.Close()
				return sock
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm socket %s did not appear", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testEntries builds n entries of the kinds a namespace's list holds:
// boot_aggregate, ima-ng and ima-ns measurements, a violation, and one
// measurement on PCR 11 (a policy rule's pcr=11).
func testEntries(t testing.TB, ns string, n int) []*measurelog.Entry {
	t.Helper()
	ba, err := measurelog.NewBootAggregate("ima-ng", nil, measurelog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	out := []*measurelog.Entry{ba}
	for i := 1; i < n; i++ {
		d := sha256.Sum256([]byte(fmt.Sprintf("%s file %d", ns, i)))
		m := measurelog.Measurement{FileDigest: d[:], FileAlgo: measurelog.SHA256, Name: fmt.Sprintf("/usr/bin/prog%d", i)}
		var e *measurelog.Entry
		switch {
		case i == 3:
			e, err = measurelog.NewViolation("ima-ng", 10, "/tmp/raced", measurelog.SHA256)
		case i == 5:
			e, err = measurelog.NewEntry("ima-ng", 11, m)
		case i%2 == 0:
			m.Namespace = ns
			e, err = measurelog.NewEntry("ima-ns", 10, m)
		default:
			e, err = measurelog.NewEntry("ima-ng", 10, m)
		}
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		out = append(out, e)
	}
	return out
}

// record appends entries to the list and extends the vTPM, as the
// daemon's pipeline does.
func record(t *testing.T, l *measurelog.List, v *SWTPM, entries []*measurelog.Entry) {
	t.Helper()
	for i, e := range entries {
		if !l.Append(e) {
			t.Fatalf("entry %d: List.Append refused it", i)
		}
		if err := v.Extend(e); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
}
