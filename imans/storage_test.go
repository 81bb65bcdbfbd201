package imans

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
)

// smallTmpfs mounts a tmpfs of size bytes under a temp dir, unmounted at
// cleanup.
func smallTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fill writes a file at path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

// TestStateDiskFull: on a full state disk a Record fails (ErrStorage, not
// listed, journals cut back to their last durable record), the namespaces
// show as degraded, a violation is owed, a policy load fails with ENOSPC
// and changes nothing; once space is freed the daemon resumes by itself
// (the owed violation written first, the mark cleared), and a restart
// replays identical lists and PCRs.
func TestStateDiskFull(t *testing.T) {
	needRoot(t)
	defer func(d time.Duration) { retryEvery = d }(retryEvery)
	retryEvery = 20 * time.Millisecond
	state := filepath.Join(smallTmpfs(t, 512<<10), "state")
	var log harness.SyncBuffer
	r := openRegistry(t, state, &log)
	c, err := r.Attach("c", harness.StartSleeper(t).Pid, []byte(`{"ociVersion":"1.0.2"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Record(c, bufEntry(t, c, "/before")); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(filepath.Dir(state), "filler")
	fill(t, filler)
	cLen, hostLen := c.List.Len(), r.Host().List.Len()
	policyBefore := c.Policy().String()

	var failed error
	for i := 0; i < 1000 && failed == nil; i++ {
		// Records succeed while the page cache still takes a block.
		if err := r.Record(c, bufEntry(t, c, fmt.Sprintf("/full-%d", i))); err != nil {
			failed = err
		} else {
			cLen, hostLen = c.List.Len(), r.Host().List.Len()
		}
	}
	if !errors.Is(failed, ErrStorage) || !errors.Is(failed, unix.ENOSPC) {
		t.Fatalf("record on a full disk: %v, want ErrStorage and ENOSPC", failed)
	}
	if c.List.Len() != cLen || r.Host().List.Len() != hostLen {
		t.Errorf("a failed record was listed: %d/%d entries, want %d/%d", c.List.Len(), r.Host().List.Len(), cLen, hostLen)
	}
	if d := r.Degraded(c); !strings.Contains(d, "storage") || r.Degraded(r.Host()) == "" {
		t.Errorf("degraded: c %q, host %q", d, r.Degraded(r.Host()))
	}
	v, _ := measurelog.NewViolation("ima-ng", DefaultPCR, "/unmeasured", measurelog.SHA256)
	if err := r.Record(c, v); !errors.Is(err, ErrStorage) {
		t.Errorf("violation on a full disk: %v", err)
	}
	if err := c.LoadPolicy(mustParse(t, "measure func=BPRM_CHECK\n")); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("policy load on a full disk: %v, want ENOSPC", err)
	}
	if c.Policy().String() != policyBefore {
		t.Errorf("policy changed by a failed load: %q", c.Policy().String())
	}
	for _, p := range []string{filepath.Join(state, "host.journal"), filepath.Join(state, "ns", "c", "list.journal")} {
		data, _ := os.ReadFile(p)
		if _, err := measurelog.DecodeBinary(data, measurelog.SHA1); err != nil {
			t.Errorf("%s not cut back to its last durable record: %v", p, err)
		}
	}

	os.Remove(filler)
	deadline := time.Now().Add(5 * time.Second)
	for r.Degraded(c) != "" || r.Degraded(r.Host()) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("still degraded after space came back: %q", r.Degraded(c))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if last := c.List.Entry(c.List.Len() - 1); c.List.Len() != cLen+1 || !last.Violation || last.Name() != "/unmeasured" {
		t.Errorf("owed violation not written on recovery: %d entries, last %s", c.List.Len(), last.Name())
	}
	if err := r.Record(c, bufEntry(t, c, "/after")); err != nil {
		t.Fatalf("record after recovery: %v", err)
	}
	if !strings.Contains(log.String(), "journal write failed") {
		t.Errorf("failure not logged:\n%s", log.String())
	}
	want := map[string][]byte{"c": listBytes(t, c.List), HostID: listBytes(t, r.Host().List)}
	r.Close()
	r2 := openRegistry(t, state, &log)
	defer r2.Close()
	r2.Restore()
	for id, b := range want {
		ns, ok := r2.Get(id)
		if !ok || !bytes.Equal(listBytes(t, ns.List), b) {
			t.Errorf("%s: list differs after a restart", id)
		}
	}
}

// TestStorageContainerJournalFails: when only a container's journal fails
// in a batch (here: its descriptor made read-only), that container's items
// fail and are cut back off every journal, the host's items of the same
// batch are recorded, the host journal holds exactly the host list, and
// the retry loop clears the mark by itself once the journal takes writes.
func TestStorageContainerJournalFails(t *testing.T) {
	needRoot(t)
	defer func(d time.Duration) { retryEvery = d }(retryEvery)
	retryEvery = 20 * time.Millisecond
	state := t.TempDir()
	var log harness.SyncBuffer
	r := openRegistry(t, state, &log)
	c, err := r.Attach("c", harness.StartSleeper(t).Pid, []byte(`{"ociVersion":"1.0.2"}`))
	if err != nil {
		t.Fatal(err)
	}
	cJournal, _ := os.ReadFile(c.journal.path)
	rw := c.journal.f
	ro, err := os.Open(c.journal.path)
	if err != nil {
		t.Fatal(err)
	}
	c.journal.f = ro
	hostLen, cLen := r.Host().List.Len(), c.List.Len()
	err = r.RecordAll([]Item{
		{NS: r.Host(), Entry: bufEntry(t, r.Host(), "/host-1")},
		{NS: c, Entry: bufEntry(t, c, "/c-1")},
		{NS: r.Host(), Entry: bufEntry(t, r.Host(), "/host-2")},
	})
	if !errors.Is(err, ErrStorage) {
		t.Fatalf("RecordAll with a failing container journal: %v", err)
	}
	if c.List.Len() != cLen || r.Host().List.Len() != hostLen+2 {
		t.Errorf("lists: c %d (want %d), host %d (want %d)", c.List.Len(), cLen, r.Host().List.Len(), hostLen+2)
	}
	hostNames := journalNames(t, filepath.Join(state, "host.journal"))
	if len(hostNames) != r.Host().List.Len()+1 || hostNames[len(hostNames)-1] != "/host-2" { // +1: the container's boot_aggregate, a duplicate
		t.Errorf("host journal %q does not hold exactly the host list", hostNames)
	}
	if now, _ := os.ReadFile(c.journal.path); !bytes.Equal(now, cJournal) {
		t.Errorf("container journal changed by a failed batch")
	}
	if !strings.Contains(r.Degraded(c), "storage") || !strings.Contains(r.Degraded(r.Host()), "storage") {
		t.Errorf("degraded: c %q, host %q", r.Degraded(c), r.Degraded(r.Host()))
	}
	r.state.mu.Lock()
	c.journal.f = rw
	r.state.mu.Unlock()
	ro.Close()
	deadline := time.Now().Add(5 * time.Second)
	for r.Degraded(c) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("still degraded: %q", r.Degraded(c))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.Record(c, bufEntry(t, c, "/c-2")); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"c": listBytes(t, c.List), HostID: listBytes(t, r.Host().List)}
	r.Close()
	r2 := openRegistry(t, state, &log)
	defer r2.Close()
	r2.Restore()
	for id, b := range want {
		if ns, ok := r2.Get(id); !ok || !bytes.Equal(listBytes(t, ns.List), b) {
			t.Errorf("%s: list differs after a restart", id)
		}
	}
}
