package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUpgradeNoGap: `imafs upgrade` hands the daemon over to a new process
// while a container reads its list in a tight loop: not one read fails,
// lists and PCRs are unchanged, one imafs mount is left in the container,
// and the new daemon measures into the same journals.
func TestUpgradeNoGap(t *testing.T) {
	d := startDaemon(t)
	c := busyboxContainer(t, false)
	attachUnshare(t, d, c, "up")
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("measure func=FILE_CHECK mask=MAY_READ\n"), 0o644)
	if _, err := d.imafs("policy", "up", "--set", pol); err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	for i := 0; i < 5; i++ {
		p := filepath.Join(files, "f"+itoa(i))
		os.WriteFile(p, []byte("before "+itoa(i)), 0o644)
		if _, err := d.imafs("measure", "--id", "up", p); err != nil {
			t.Fatal(err)
		}
	}
	before := takeSnapshot(t, d, []string{"up"})

	// A reader in the container: open+read+close as fast as it can until
	// told to stop.
	stop := filepath.Join(c.Opts.Root, "stop-reader")
	script := `ok=0; fail=0; while [ ! -e /stop-reader ]; do if cat ` + ima + `/runtime_measurements_count >/dev/null 2>/err; then ok=$((ok+1)); : >/reading; else fail=$((fail+1)); cat /err; fi; done; echo "ok=$ok fail=$fail"`
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reader := c.Command(ctx, 0, "sh", "-c", script)
	var out bytes.Buffer
	reader.Stdout, reader.Stderr = &out, &out
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(stop, nil, 0o644); reader.Process.Kill(); reader.Wait() })
	// The reader marks each successful read: the upgrade starts while it
	// reads, and it goes on reading from the successor.
	reading := filepath.Join(c.Opts.Root, "reading")
	waitReading := func(when string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(reading); err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the container's reader did not read %s", when)
			}
		}
	}
	waitReading("before the upgrade")

	begin := time.Now()
	upgradeDaemon(t, d)
	took := time.Since(begin)
	d.waitExit(t, "old daemon after the upgrade")
	os.Remove(reading)
	waitReading("from the successor")
	os.WriteFile(stop, nil, 0o644)
	if err := reader.Wait(); err != nil {
		t.Fatalf("reader: %v: %s", err, out.String())
	}
	var ok, fail int
	if _, err := fmt.Sscanf(strings.TrimSpace(out.String()[strings.LastIndex(out.String(), "ok="):]), "ok=%d fail=%d", &ok, &fail); err != nil {
		t.Fatalf("reader output %q", out.String())
	}
	t.Logf("upgrade took %v; the container's reader did %d reads meanwhile, %d failed", took, ok, fail)
	if fail != 0 || ok == 0 {
		t.Errorf("reads during the upgrade: %d ok, %d failed:\n%s", ok, fail, out.String())
	}

	after := takeSnapshot(t, d, []string{"up"})
	sameSnapshot(t, "after upgrade", before, after)
	if mounts, _ := c.Exec(0, "cat", "/proc/self/mountinfo"); strings.Count(mounts, "fuse.imafs") != 1 {
		t.Errorf("%d imafs mounts in the container after the upgrade:\n%s", strings.Count(mounts, "fuse.imafs"), mounts)
	}
	p := filepath.Join(files, "after")
	os.WriteFile(p, []byte("after the upgrade"), 0o644)
	if _, err := d.imafs("measure", "--id", "up", p); err != nil {
		t.Fatal(err)
	}
	if n := d.ps(t)["up"].Entries; n != before.ps["up"].Entries+1 {
		t.Errorf("after a measurement by the successor: %d entries, want %d", n, before.ps["up"].Entries+1)
	}
	if list, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements"); err != nil || !strings.Contains(list, p) {
		t.Errorf("container list after the upgrade lacks %s: %v", p, err)
	}
	journal, _ := os.ReadFile(filepath.Join(d.state, "ns", "up", "list.journal"))
	if !bytes.Contains(journal, []byte(p)) {
		t.Error("the successor's measurement is not in the container's journal")
	}
}

// waitExit waits up to 15 s for d's process to exit, cleanly (status 0).
func (d *daemon) waitExit(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("%s: %v\n%s", what, err, d.logText())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: still running after 15 s", what)
	}
}

// upgradeDaemon runs `imafs upgrade` against d and returns the successor's
// pid (printed as "daemon pid N"), which the test's cleanup stops.
func upgradeDaemon(t *testing.T, d *daemon) int {
	t.Helper()
	res, err := d.imafs("upgrade")
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, d.logText())
	}
	m := regexp.MustCompile(`daemon pid (\d+)`).FindStringSubmatch(res)
	if m == nil {
		t.Fatalf("upgrade output %q", res)
	}
	pid, _ := strconv.Atoi(m[1])
	t.Cleanup(func() { stopPid(t, pid) })
	return pid
}

// startDaemonFromCopy starts a daemon from a private copy of the imafs
// binary and returns the copy's path: breaking the copy makes the next
// upgrade fail (an upgrade starts what is at the daemon's path then).
func startDaemonFromCopy(t *testing.T, extra ...string) (*daemon, string) {
	t.Helper()
	needDaemon(t)
	private := filepath.Join(t.TempDir(), "imafs")
	bin, err := os.ReadFile(imafsBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(private, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	real := imafsBin
	imafsBin = private
	defer func() { imafsBin = real }()
	return startDaemon(t, extra...), private
}

// stopPid stops a daemon this test did not start as a child (a successor
// after an upgrade) by pid: SIGTERM, then SIGKILL after 15 s.
func stopPid(t *testing.T, pid int) {
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return
		}
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); bytes.Contains(b, []byte(") Z ")) {
			return // exited, waiting for its reaper
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("daemon pid %d did not stop after SIGTERM", pid)
	syscall.Kill(pid, syscall.SIGKILL)
}

// TestUpgradeRollback: when the successor fails to start, the daemon takes
// everything back: it answers on its socket again, its container reads its
// list on a working mount, and measurements are journaled again.
func TestUpgradeRollback(t *testing.T) {
	// Run the daemon from a private copy of the binary, then break the copy:
	// the upgrade starts what is at that path now.
	d, private := startDaemonFromCopy(t)
	c := busyboxContainer(t, false)
	attachUnshare(t, d, c, "rb")
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("measure func=FILE_CHECK mask=MAY_READ\n"), 0o644)
	if _, err := d.imafs("policy", "rb", "--set", pol); err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, d, []string{"rb"})
	if err := os.Remove(private); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(private, []byte("#!/bin/sh\necho broken successor >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := d.imafs("upgrade"); err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("upgrade to a broken binary: %q, %v", out, err)
	}
	select {
	case err := <-d.done:
		t.Fatalf("daemon exited after a failed upgrade: %v\n%s", err, d.logText())
	default:
	}
	sameSnapshot(t, "after a failed upgrade", before, takeSnapshot(t, d, []string{"rb"}))
	if _, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil {
		t.Errorf("container read after a failed upgrade: %v", err)
	}
	if mounts, _ := c.Exec(0, "cat", "/proc/self/mountinfo"); strings.Count(mounts, "fuse.imafs") != 1 {
		t.Errorf("%d imafs mounts after a failed upgrade:\n%s", strings.Count(mounts, "fuse.imafs"), mounts)
	}
	p := filepath.Join(t.TempDir(), "after")
	os.WriteFile(p, []byte("after the failed upgrade"), 0o644)
	if _, err := d.imafs("measure", "--id", "rb", p); err != nil {
		t.Fatalf("measure after a failed upgrade: %v", err)
	}
	journal, _ := os.ReadFile(filepath.Join(d.state, "ns", "rb", "list.journal"))
	if !bytes.Contains(journal, []byte(p)) {
		t.Error("measurement after the failed upgrade is not journaled")
	}
}
