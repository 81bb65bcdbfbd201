package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imafs/imafs/control"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
)

// restartDaemon starts a new `imafs serve` on old's socket, state directory
// and host mount (old must have exited), logging to a new file. Cleanup
// stops it with SIGTERM.
func restartDaemon(t *testing.T, old *daemon, extra ...string) *daemon {
	t.Helper()
	dir := filepath.Dir(old.socket)
	syscall.Unmount(old.hostMnt, syscall.MNT_DETACH) // a killed daemon's dead host mount
	d := &daemon{
		t:       t,
		socket:  old.socket,
		state:   old.state,
		hostMnt: old.hostMnt,
		log:     filepath.Join(dir, fmt.Sprintf("daemon.%d.log", time.Now().UnixNano())),
		done:    make(chan error, 1),
	}
	d.launch(20*time.Second, extra...)
	return d
}

// kill9 kills d with SIGKILL (no shutdown at all) and waits for it.
func kill9(t *testing.T, d *daemon) {
	t.Helper()
	d.cmd.Process.Kill()
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not die after SIGKILL")
	}
}

func (d *daemon) logText() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

// snapshot is what must survive a restart: ps rows and binary lists.
type snapshot struct {
	ps    map[string]nsInfo
	lists map[string][]byte
}

func takeSnapshot(t *testing.T, d *daemon, ids []string) snapshot {
	t.Helper()
	s := snapshot{ps: d.ps(t), lists: map[string][]byte{}}
	for _, id := range append([]string{"host"}, ids...) {
		s.lists[id] = binaryLog(t, d, id)
	}
	return s
}

func binaryLog(t *testing.T, d *daemon, id string) []byte {
	t.Helper()
	var out bytes.Buffer
	req := &control.Request{Op: control.OpLog, ID: id, Format: "binary"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := control.NewClient(d.socket).Stream(ctx, req, &out); err != nil {
		t.Fatalf("log %s --format binary: %v", id, err)
	}
	return out.Bytes()
}

// checkReplay: the PCR-10 values ps reports for id are the replay of its
// binary list.
func checkReplay(t *testing.T, d *daemon, row nsInfo, list []byte) []*measurelog.Entry {
	t.Helper()
	entries, err := measurelog.DecodeBinary(list, measurelog.SHA1)
	if err != nil {
		t.Fatalf("%s: decode list: %v", row.ID, err)
	}
	p := measurelog.Replay(entries, measurelog.SHA1, measurelog.SHA256)
	if got := fmt.Sprintf("%x", p.Value(measurelog.SHA1, 10)); got != row.PCR10SHA1 {
		t.Errorf("%s: replayed sha1 PCR 10 %s, ps says %s", row.ID, got, row.PCR10SHA1)
	}
	if got := fmt.Sprintf("%x", p.Value(measurelog.SHA256, 10)); got != row.PCR10SHA256 {
		t.Errorf("%s: replayed sha256 PCR 10 %s, ps says %s", row.ID, got, row.PCR10SHA256)
	}
	if len(entries) != row.Entries {
		t.Errorf("%s: list has %d entries, ps says %d", row.ID, len(entries), row.Entries)
	}
	return entries
}

func sameSnapshot(t *testing.T, when string, before, after snapshot) {
	t.Helper()
	for id, list := range before.lists {
		b, a := before.ps[id], after.ps[id]
		if a.ID == "" {
			t.Errorf("%s: %s is not attached any more", when, id)
			continue
		}
		if a.Entries != b.Entries || a.PCR10SHA1 != b.PCR10SHA1 || a.PCR10SHA256 != b.PCR10SHA256 || a.Rules != b.Rules || a.Violations != b.Violations {
			t.Errorf("%s: %s: ps %+v, before %+v", when, id, a, b)
		}
		if !bytes.Equal(after.lists[id], list) {
			t.Errorf("%s: %s: binary list differs (%d bytes, before %d)", when, id, len(after.lists[id]), len(list))
		}
	}
}

// readable waits until cat of the container's list works again and returns
// how long that took from since.
func readable(t *testing.T, c *harness.Unshare, since time.Time) time.Duration {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements"); err == nil {
			return time.Since(since)
		} else if time.Now().After(deadline) {
			t.Fatalf("list still unreadable in the container: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCrashRestart: a daemon killed with SIGKILL during a heavy measured
// workload (several writers per container through the control socket)
// loses no acknowledged entry: after the restart every acknowledged entry
// is in its container's list, in order, and ps's PCR 10 equals the replay of
// the binary list. Running containers read their lists again without being
// restarted (the gap is logged); a torn journal tail is cut and logged; a
// crash at rest and a planned restart (SIGTERM) change nothing.
func TestCrashRestart(t *testing.T) {
	d := startDaemon(t)
	ids := []string{"r0", "r1", "r2"}
	cs := map[string]*harness.Unshare{}
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("measure func=FILE_CHECK mask=MAY_READ\n"), 0o644)
	for _, id := range ids {
		cs[id] = busyboxContainer(t, false)
		attachUnshare(t, d, cs[id], id)
		if _, err := d.imafs("policy", id, "--set", pol); err != nil {
			t.Fatal(err)
		}
	}

	// Files with distinct contents (the duplicate rule would drop repeats).
	const writersPerNS = 2
	const perWriter = 3000
	files := t.TempDir()
	for w := 0; w < len(ids)*writersPerNS; w++ {
		for i := 0; i < perWriter; i++ {
			if err := os.WriteFile(filepath.Join(files, fmt.Sprintf("w%d-%d", w, i)), []byte(fmt.Sprintf("writer %d file %d\n", w, i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	acked := make([][]string, len(ids)*writersPerNS) // per writer, in order
	var total sync.WaitGroup
	var mu sync.Mutex
	count := 0
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := control.NewClient(d.socket)
	for w := range acked {
		total.Add(1)
		go func(w int) {
			defer total.Done()
			id := ids[w%len(ids)]
			for i := 0; i < perWriter; i++ {
				name := fmt.Sprintf("/w%d-%d", w, i)
				resp, err := cl.Call(ctx, &control.Request{Op: control.OpMeasure, ID: id, Path: filepath.Join(files, name), Name: name})
				if err != nil {
					return // the daemon died: this one was not acknowledged
				}
				if !resp.Measured {
					t.Errorf("%s %s: not measured", id, name)
					return
				}
				acked[w] = append(acked[w], name)
				mu.Lock()
				count++
				mu.Unlock()
			}
		}(w)
	}
	// Kill in the middle of it.
	start := time.Now()
	for {
		mu.Lock()
		n := count
		mu.Unlock()
		if n >= 1500 || time.Since(start) > 20*time.Second {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	kill9(t, d)
	killedAt := time.Now()
	total.Wait()
	n := 0
	for _, a := range acked {
		n += len(a)
	}
	t.Logf("killed after %d acknowledged measurements in %v (%.0f/s)", n, killedAt.Sub(start), float64(n)/killedAt.Sub(start).Seconds())
	if _, err := cs["r0"].Exec(0, "cat", ima+"/runtime_measurements_count"); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("while the daemon is dead: %v, want ENOTCONN", err)
	}

	d = restartDaemon(t, d)
	gap := readable(t, cs["r1"], killedAt)
	t.Logf("restart gap after SIGKILL: %v from the kill until the container read its list again (daemon start included)", gap)
	ps := d.ps(t)
	for _, id := range ids {
		if ps[id].Pid != cs[id].Pid {
			t.Errorf("%s not restored: %+v", id, ps[id])
		}
	}
	for w, names := range acked {
		id := ids[w%len(ids)]
		entries := checkReplay(t, d, ps[id], binaryLog(t, d, id))
		pos := map[string]int{}
		for i, e := range entries {
			pos[e.Name()] = i
		}
		last := -1
		for _, name := range names {
			i, ok := pos[name]
			if !ok {
				t.Errorf("%s: acknowledged %s lost", id, name)
				continue
			}
			if i <= last {
				t.Errorf("%s: %s out of order", id, name)
			}
			last = i
		}
	}
	checkReplay(t, d, ps["host"], binaryLog(t, d, "host"))
	if p, err := cs["r2"].Exec(0, "cat", ima+"/policy"); err != nil || p != "measure func=FILE_CHECK mask=MAY_READ \n" {
		t.Errorf("policy after restart: %q, %v", p, err)
	}
	if !strings.Contains(d.logText(), "re-attached after restart") {
		t.Errorf("no re-attach logged:\n%s", d.logText())
	}

	// At rest: a crash with a torn journal tail changes nothing.
	before := takeSnapshot(t, d, ids)
	kill9(t, d)
	killedAt = time.Now()
	journal := filepath.Join(d.state, "ns", "r0", "list.journal")
	f, err := os.OpenFile(journal, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	f.Write([]byte{10, 0, 0, 0, 0xde, 0xad}) // a record cut short
	f.Close()
	d = restartDaemon(t, d)
	t.Logf("restart gap after SIGKILL at rest: %v", readable(t, cs["r0"], killedAt))
	sameSnapshot(t, "after a crash at rest", before, takeSnapshot(t, d, ids))
	if !regexp.MustCompile(`torn tail cut.*offset=` + fmt.Sprint(st.Size())).MatchString(d.logText()) {
		t.Errorf("torn tail at %d not logged:\n%s", st.Size(), d.logText())
	}

	// A planned restart.
	d.stop()
	stoppedAt := time.Now()
	d = restartDaemon(t, d)
	t.Logf("restart gap after SIGTERM: %v", readable(t, cs["r2"], stoppedAt))
	sameSnapshot(t, "after SIGTERM", before, takeSnapshot(t, d, ids))
	for _, id := range ids {
		mounts, _ := cs[id].Exec(0, "cat", "/proc/self/mountinfo")
		if k := strings.Count(mounts, "fuse.imafs"); k != 1 {
			t.Errorf("%s: %d imafs mounts, want 1", id, k)
		}
	}

	// A container that exits while the daemon is down is detached.
	kill9(t, d)
	cs["r1"].Kill()
	d = restartDaemon(t, d)
	if _, ok := d.ps(t)["r1"]; ok {
		t.Error("r1 exited while the daemon was down but is still attached")
	}
	if m, _ := filepath.Glob(filepath.Join(d.state, "archive", "r1.*", "list.journal")); len(m) != 1 {
		t.Errorf("r1's journal not archived: %v", m)
	}
}

// TestRuncRestart: a runc container attached by its OCI hook before
// pivot_root (its tree mounted under the rootfs path) is re-attached at
// /sys/kernel/security after a SIGKILL restart; its list and policy are
// unchanged and its poststop hook still detaches it.
func TestRuncRestart(t *testing.T) {
	d := startDaemon(t)
	c := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Capabilities: []string{"CAP_SYS_ADMIN"}})
	if _, err := c.Exec(0, "sh", "-c", "echo 'measure func=BPRM_CHECK mask=MAY_EXEC' > "+ima+"/policy"); err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, d, []string{c.ID})
	kill9(t, d)
	if _, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("while the daemon is dead: %v, want ENOTCONN", err)
	}
	killedAt := time.Now()
	d = restartDaemon(t, d)
	for {
		if _, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err == nil {
			break
		} else if time.Since(killedAt) > 20*time.Second {
			t.Fatalf("runc container can't read its list after the restart: %v\n%s", err, d.logText())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("runc container: restart gap %v", time.Since(killedAt))
	sameSnapshot(t, "runc after restart", before, takeSnapshot(t, d, []string{c.ID}))
	if p, err := c.Exec(0, "cat", ima+"/policy"); err != nil || p != "measure func=BPRM_CHECK mask=MAY_EXEC \n" {
		t.Errorf("policy after restart %q, %v", p, err)
	}
	if mounts, _ := c.Exec(0, "cat", "/proc/self/mountinfo"); strings.Count(mounts, "fuse.imafs") != 1 {
		t.Errorf("%d imafs mounts in the runc container:\n%s", strings.Count(mounts, "fuse.imafs"), mounts)
	}
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	d.waitDetached(t, c.ID)
}
