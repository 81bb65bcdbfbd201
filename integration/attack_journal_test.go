package integration

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
)

// Attacks on the state directory: a damaged journal and a full disk.
// Each test runs the real daemon with real runc containers and checks the
// kernel-like outcome (a violation entry: zero template digest, PCR
// extended with 0xff.., the violations counter), that the damaged original
// is kept byte for byte, that operators see it (ps --json, /metrics, an
// error in the log), and that the daemon still serves the others.

// journalFixture is a daemon with a victim and a bystander container, each
// holding measured entries.
type journalFixture struct {
	d                 *daemon
	metrics           string
	victim, bystander *harness.RuncContainer
	files             string // host dir of measured files
}

func newJournalFixture(t *testing.T, entries int) *journalFixture {
	t.Helper()
	f := &journalFixture{metrics: freeLocalAddr(t), files: harness.TempDir(t)}
	f.d = startDaemon(t, "--metrics-addr", f.metrics)
	f.victim = harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(f.d), Capabilities: []string{"CAP_SYS_ADMIN"}})
	f.bystander = harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(f.d), Capabilities: []string{"CAP_SYS_ADMIN"}})
	for _, c := range []*harness.RuncContainer{f.victim, f.bystander} {
		runIn(t, c, "sh", "-c", "echo 'measure func=FILE_CHECK' > "+ima+"/policy")
		for i := 0; i < entries; i++ {
			f.measure(t, c.ID, fmt.Sprintf("%s-%d", c.ID, i))
		}
	}
	return f
}

// measure records a new file in container id's list through the daemon.
func (f *journalFixture) measure(t *testing.T, id, name string) {
	t.Helper()
	path := filepath.Join(f.files, name)
	if err := os.WriteFile(path, []byte("content of "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := f.d.imafs("measure", "--id", id, path); err != nil {
		t.Fatalf("measure %s in %s: %v\n%s", name, id, err, out)
	}
}

// restart stops the daemon (SIGTERM), damages the state with damage and
// starts a new daemon on it. It returns the damaged file's bytes.
func (f *journalFixture) restart(t *testing.T, path string, damage func([]byte) []byte) []byte {
	t.Helper()
	f.d.stop()
	data, _ := os.ReadFile(path)
	damaged := damage(data)
	if damaged == nil {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	} else if err := os.WriteFile(path, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	f.d = restartDaemon(t, f.d, "--metrics-addr", f.metrics)
	return damaged
}

// recordAt returns the byte offset of record i of a binary journal.
func recordAt(t *testing.T, data []byte, i int) int {
	t.Helper()
	entries, err := measurelog.DecodeBinary(data, measurelog.SHA1)
	if err != nil || len(entries) <= i {
		t.Fatalf("journal of %d records (%v), need record %d", len(entries), err, i)
	}
	off := 0
	for _, e := range entries[:i] {
		off += len(e.AppendBinary(nil, measurelog.SHA1))
	}
	return off
}

// checkDamaged asserts the outcome for namespace id whose journal at path
// was damaged into damaged (nil: removed) and should keep kept entries.
func (f *journalFixture) checkDamaged(t *testing.T, id, path string, damaged []byte, kept int) {
	t.Helper()
	d := f.d
	rows := d.ps(t)
	row := rows[id]
	if row.Degraded == "" || !strings.Contains(row.Degraded, "journal-damaged") {
		t.Errorf("%s: ps --json degraded %q", id, row.Degraded)
	}
	if row.Entries != kept+1 || row.Violations != 1 {
		t.Errorf("%s: %d entries, %d violations; want %d restored + 1 violation", id, row.Entries, row.Violations, kept)
	}
	entries := checkReplay(t, d, row, binaryLog(t, d, id)) // the PCRs are the list's replay
	if last := entries[len(entries)-1]; !last.Violation || last.Name() != imans.JournalDamagedName {
		t.Errorf("%s: last entry %q (violation %v), want the %s violation", id, last.Name(), last.Violation, imans.JournalDamagedName)
	}
	if out, _ := d.imafs("ps"); !strings.Contains(out, "journal-damaged") {
		t.Errorf("imafs ps does not show the damage:\n%s", out)
	}
	saved, _ := filepath.Glob(path + ".corrupt-*")
	if damaged == nil {
		saved, _ = filepath.Glob(path + ".missing-*")
	}
	if len(saved) != 1 {
		t.Fatalf("quarantined originals %v", saved)
	}
	if b, _ := os.ReadFile(saved[0]); damaged != nil && !bytes.Equal(b, damaged) {
		t.Errorf("quarantined copy (%d bytes) differs from the damaged journal (%d bytes)", len(b), len(damaged))
	}
	text := harness.Scrape(t, "http://"+f.metrics+"/metrics")
	if !harness.HasLine(text, `imafs_namespace_degraded{namespace="`+id+`"} 1`) {
		t.Errorf("metrics lack imafs_namespace_degraded 1 for %s", id)
	}
	if !strings.Contains(d.logText(), `level=error msg="journal damaged`) {
		t.Errorf("no error-level log line for the damage:\n%s", d.logText())
	}
}

// checkServes: the bystander is intact, readable in its container and
// still measured; the victim goes on too.
func (f *journalFixture) checkServes(t *testing.T, before nsInfo, victimDamaged bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := f.bystander.Exec(0, "cat", ima+"/ascii_runtime_measurements")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bystander cannot read its list after the restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	row := f.d.ps(t)[f.bystander.ID]
	if row.Degraded != "" || row.Entries != before.Entries || row.PCR10SHA256 != before.PCR10SHA256 {
		t.Errorf("bystander changed: %+v, before %+v", row, before)
	}
	text := harness.Scrape(t, "http://"+f.metrics+"/metrics")
	if !harness.HasLine(text, `imafs_namespace_degraded{namespace="`+f.bystander.ID+`"} 0`) {
		t.Errorf("bystander reported degraded in the metrics")
	}
	f.measure(t, f.bystander.ID, "bystander-after")
	f.measure(t, f.victim.ID, "victim-after")
	want := "0"
	if victimDamaged {
		want = "1"
	}
	out, err := f.victim.Exec(0, "cat", ima+"/ascii_runtime_measurements")
	if err != nil || strings.Contains(out, imans.JournalDamagedName) != victimDamaged || !strings.Contains(out, "victim-after") {
		t.Errorf("victim's own view: %v\n%s", err, out)
	}
	if v, err := f.victim.Exec(0, "cat", ima+"/violations"); err != nil || strings.TrimSpace(v) != want {
		t.Errorf("victim's violations file %q, %v; want %s", v, err, want)
	}
}

func journalOf(d *daemon, id string) string { return filepath.Join(d.state, "ns", id, "list.journal") }

// TestAttackJournalCorruptMiddle: a length field in the middle of a
// container's journal made to point past the end (the case, once
// taken for a torn tail) keeps the original, restores the records before
// it, adds a violation and marks the container degraded.
func TestAttackJournalCorruptMiddle(t *testing.T) {
	f := newJournalFixture(t, 30)
	path := journalOf(f.d, f.victim.ID)
	before := f.d.ps(t)[f.bystander.ID]
	var mid int
	damaged := f.restart(t, path, func(data []byte) []byte {
		mid = recordAt(t, data, 10)
		// ima-ng record: pcr 4, digest 20, name length 4, "ima-ng", data length.
		binary.LittleEndian.PutUint32(data[mid+34:], 1<<20)
		return data
	})
	f.checkDamaged(t, f.victim.ID, path, damaged, 10)
	if fi, err := os.Stat(path); err != nil || fi.Size() <= int64(mid) {
		t.Errorf("journal after repair: %v, size %v (prefix %d + violation)", err, fi.Size(), mid)
	}
	f.checkServes(t, before, true)
}

// TestAttackJournalMissing: a container's list.journal removed next to a
// valid container.json is damage, not an empty list.
func TestAttackJournalMissing(t *testing.T) {
	f := newJournalFixture(t, 5)
	before := f.d.ps(t)[f.bystander.ID]
	path := journalOf(f.d, f.victim.ID)
	f.restart(t, path, func([]byte) []byte { return nil })
	f.checkDamaged(t, f.victim.ID, path, nil, 0)
	f.checkServes(t, before, true)
}

// TestAttackJournalEmpty: a container's list.journal emptied likewise.
func TestAttackJournalEmpty(t *testing.T) {
	f := newJournalFixture(t, 5)
	before := f.d.ps(t)[f.bystander.ID]
	path := journalOf(f.d, f.victim.ID)
	damaged := f.restart(t, path, func([]byte) []byte { return []byte{} })
	f.checkDamaged(t, f.victim.ID, path, damaged, 0)
	f.checkServes(t, before, true)
}

// TestAttackHostJournalCorrupt: a record of the host's journal with a bad
// digest: the host list keeps its valid prefix and a violation; the
// containers' lists are untouched.
func TestAttackHostJournalCorrupt(t *testing.T) {
	f := newJournalFixture(t, 10)
	before := f.d.ps(t)[f.bystander.ID]
	path := filepath.Join(f.d.state, "host.journal")
	kept := 0
	damaged := f.restart(t, path, func(data []byte) []byte {
		// What can be proven: the 8 records before the damage, replayed
		// (the containers' boot_aggregates are duplicates of the host's:
		// the kernel's rule keeps them out of the host list).
		entries, _ := measurelog.DecodeBinary(data, measurelog.SHA1)
		proven := measurelog.NewList()
		for _, e := range entries[:8] {
			proven.Append(e)
		}
		kept = proven.Len()
		data[recordAt(t, data, 8)+10] ^= 0x5a // inside the template digest
		return data
	})
	f.checkDamaged(t, imans.HostID, path, damaged, kept)
	if row := f.d.ps(t)[f.victim.ID]; row.Degraded != "" || row.Violations != 0 {
		t.Errorf("a container is marked for the host's damage: %+v", row)
	}
	f.checkServes(t, before, false)
}

// TestAttackStateDiskFull: with the state directory on a 2 MiB tmpfs that
// fills up, a fail-open (measure-only) container's execs are allowed and
// recorded as violations, nothing unjournaled is listed, a policy write
// fails and changes nothing, ps and the metrics show the condition; once
// space is freed the daemon resumes by itself (the owed violations written
// first), and a restart replays identical lists and PCRs.
func TestAttackStateDiskFull(t *testing.T) {
	d, metrics, c, other := fullDiskFixture(t)
	policyBefore, _ := d.imafs("policy", c.ID)

	filler := filepath.Join(d.state, "filler")
	fillFile(t, filler)
	// A journal may still take a record or two in its last page: exec
	// until the daemon reports the failing disk.
	first := 0
	for i := 1; i < 30 && first == 0; i++ {
		runIn(t, c, fmt.Sprintf("/bin/s%d", i)) // fail-open: allowed
		if strings.Contains(d.ps(t)[c.ID].Degraded, "storage") {
			first = i
		}
	}
	if first == 0 {
		t.Fatalf("no write failure reported with the state disk full:\n%s", d.logText())
	}
	ps := d.ps(t)
	entries := ps[c.ID].Entries
	for i := first + 1; i <= first+2; i++ {
		runIn(t, c, fmt.Sprintf("/bin/s%d", i))
	}
	ps = d.ps(t)
	if row := ps[c.ID]; row.Entries != entries || !strings.Contains(row.Degraded, "storage") {
		t.Errorf("on a full disk: %+v, want %d entries (nothing unjournaled listed)", row, entries)
	}
	if ps[imans.HostID].Degraded == "" || ps[other.ID].Degraded == "" {
		t.Errorf("host or other container not shown degraded on a full disk: %q, %q", ps[imans.HostID].Degraded, ps[other.ID].Degraded)
	}
	if out, _ := d.imafs("ps"); !strings.Contains(out, "storage") {
		t.Errorf("imafs ps does not show the failing disk:\n%s", out)
	}
	text := harness.Scrape(t, "http://"+metrics+"/metrics")
	if !harness.HasLine(text, `imafs_namespace_degraded{namespace="`+c.ID+`"} 1`) || metricValue(t, text, "imafs_state_write_failures_total") < 1 {
		t.Errorf("metrics do not show the failing disk")
	}
	// A policy write fails (ENOSPC) and changes nothing, from the host and
	// in the container.
	rules := filepath.Join(harness.TempDir(t), "rules")
	os.WriteFile(rules, []byte("measure func=FILE_CHECK\n"), 0o644)
	if out, err := d.imafs("policy", c.ID, "--set", rules); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("policy --set on a full disk: %v %s, want ENOSPC", err, out)
	}
	out, err := c.Exec(0, "sh", "-c", "echo 'measure func=FILE_CHECK' > "+ima+"/policy")
	if err == nil || !strings.Contains(strings.ToLower(out+err.Error()), "no space left") {
		t.Errorf("policy write in the container on a full disk: %v %s, want ENOSPC", err, out)
	}
	if p, _ := d.imafs("policy", c.ID); p != policyBefore {
		t.Errorf("policy changed on a full disk: %q, was %q", p, policyBefore)
	}
	if !strings.Contains(d.logText(), "journal write failed") {
		t.Errorf("the failing disk is not in the log")
	}

	os.Remove(filler)
	deadline := time.Now().Add(20 * time.Second)
	for ps = d.ps(t); ps[c.ID].Degraded != "" || ps[imans.HostID].Degraded != "" || ps[other.ID].Degraded != ""; ps = d.ps(t) {
		if time.Now().After(deadline) {
			t.Fatalf("still degraded after space came back: %+v", ps[c.ID])
		}
		time.Sleep(50 * time.Millisecond)
	}
	after := fmt.Sprintf("/bin/s%d", first+3)
	runIn(t, c, after)
	list := runIn(t, c, "cat", ima+"/ascii_runtime_measurements")
	for i := first; i <= first+2; i++ {
		l := measured(list, fmt.Sprintf("/bin/s%d", i))
		if len(l) != 1 || !strings.HasPrefix(l[0], "10 "+strings.Repeat("0", 40)+" ") {
			t.Errorf("/bin/s%d: %q, want one violation line (zero template digest)", i, l)
		}
	}
	if len(measured(list, after)) != 1 || strings.Index(list, fmt.Sprintf("/bin/s%d\n", first+2)) > strings.Index(list, after) {
		t.Errorf("after recovery: %s not measured after the violations:\n%s", after, list)
	}
	if row := d.ps(t)[c.ID]; row.Violations != 3 {
		t.Errorf("%d violations, want 3", row.Violations)
	}
	snap := takeSnapshot(t, d, []string{c.ID, other.ID})
	for _, id := range []string{imans.HostID, c.ID, other.ID} {
		checkReplay(t, d, snap.ps[id], snap.lists[id])
	}
	d.stop()
	d = restartDaemon(t, d, "--fanotify", "--metrics-addr", metrics)
	sameSnapshot(t, "restart after the full disk", snap, takeSnapshot(t, d, []string{c.ID, other.ID}))
	runIn(t, other, "cat", ima+"/runtime_measurements_count")
}

// fullDiskFixture starts `imafs serve --fanotify` (plus extra) on a state
// directory that is a 2 MiB tmpfs (unmounted at cleanup), with a
// container c measuring its execs of /bin/s0.. /bin/s39 (s0 run once) and
// another one.
func fullDiskFixture(t *testing.T, extra ...string) (d *daemon, metrics string, c, other *harness.RuncContainer) {
	t.Helper()
	needFanotifyDaemon(t)
	d = startDaemon(t)
	d.stop()
	if err := unix.Mount("imafs-attack-state", d.state, "tmpfs", 0, "size=2m,mode=0700"); err != nil {
		t.Fatalf("mount state tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(d.state, unix.MNT_DETACH) })
	metrics = freeLocalAddr(t)
	d = restartDaemon(t, d, append([]string{"--fanotify", "--metrics-addr", metrics}, extra...)...)
	root := tmpfsRootfs(t)
	for i := 0; i < 40; i++ {
		os.WriteFile(filepath.Join(root, "bin", fmt.Sprintf("s%d", i)), []byte(fmt.Sprintf("#!/bin/sh\n: script %d\n", i)), 0o755)
	}
	c = harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Rootfs: root, Capabilities: []string{"CAP_SYS_ADMIN"}})
	other = harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Capabilities: []string{"CAP_SYS_ADMIN"}})
	runIn(t, c, "sh", "-c", "echo 'measure func=BPRM_CHECK mask=MAY_EXEC' > "+ima+"/policy")
	runIn(t, c, "/bin/s0")
	return d, metrics, c, other
}

// TestAttackStateDiskFullFailClosed: with --fanotify-fail-closed an exec
// whose measurement cannot be journaled is denied (EPERM) and nothing is
// recorded for it; once space is freed execs are measured again without a
// restart, and a restart replays identical lists.
func TestAttackStateDiskFullFailClosed(t *testing.T) {
	d, _, c, other := fullDiskFixture(t, "--fanotify-fail-closed")
	filler := filepath.Join(d.state, "filler")
	fillFile(t, filler)
	denied := 0
	for i := 1; i < 30 && denied == 0; i++ {
		if out, err := c.Exec(0, fmt.Sprintf("/bin/s%d", i)); err != nil {
			if !strings.Contains(strings.ToLower(out+err.Error()), "not permitted") {
				t.Fatalf("exec on a full disk: %v %s, want EPERM", err, out)
			}
			denied = i
		}
	}
	if denied == 0 {
		t.Fatalf("no exec denied with the state disk full:\n%s", d.logText())
	}
	row := d.ps(t)[c.ID]
	if !strings.Contains(row.Degraded, "storage") || row.Violations != 0 {
		t.Errorf("on a full disk, fail-closed: %+v", row)
	}
	if _, err := c.Exec(0, fmt.Sprintf("/bin/s%d", denied+1)); err == nil {
		t.Errorf("a second exec on the full disk was allowed")
	}
	if now := d.ps(t)[c.ID]; now.Entries != row.Entries {
		t.Errorf("entries changed on a full disk: %d, were %d", now.Entries, row.Entries)
	}
	os.Remove(filler)
	deadline := time.Now().Add(20 * time.Second)
	for d.ps(t)[c.ID].Degraded != "" {
		if time.Now().After(deadline) {
			t.Fatal("still degraded after space came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	runIn(t, c, fmt.Sprintf("/bin/s%d", denied))
	list := runIn(t, c, "cat", ima+"/ascii_runtime_measurements")
	if l := measured(list, fmt.Sprintf("/bin/s%d", denied)); len(l) != 1 || strings.HasPrefix(l[0], "10 "+strings.Repeat("0", 40)) {
		t.Errorf("/bin/s%d after recovery: %q, want one measurement", denied, l)
	}
	snap := takeSnapshot(t, d, []string{c.ID, other.ID})
	d.stop()
	d = restartDaemon(t, d, "--fanotify", "--fanotify-fail-closed")
	sameSnapshot(t, "restart after the full disk", snap, takeSnapshot(t, d, []string{c.ID, other.ID}))
}

// fillFile writes path until its file system is full.
func fillFile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			return
		}
	}
}
