package imans

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
)

// openRegistry is newTestRegistry without the Cleanup (the tests close
// registries themselves, as a daemon shutdown or crash would) and with the
// log captured.
func openRegistry(t *testing.T, state string, log io.Writer) *Registry {
	t.Helper()
	l := logrus.New()
	l.SetOutput(log)
	l.SetLevel(logrus.InfoLevel)
	r, err := NewRegistry(Options{StateDir: state, Log: l, DefaultContainerPolicy: mustParse(t, "measure func=FILE_CHECK\n")})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	return r
}

func bufEntry(t *testing.T, ns *Namespace, name string) *measurelog.Entry {
	t.Helper()
	e, err := measurelog.NewEntry("ima-ng", DefaultPCR, measurelog.Measurement{
		FileDigest: measurelog.SHA256.Sum([]byte(name)), FileAlgo: measurelog.SHA256, Name: name,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func listBytes(t *testing.T, l *measurelog.List) []byte {
	t.Helper()
	buf := make([]byte, l.Size(measurelog.Binary, measurelog.SHA256))
	n, _ := l.ReadAt(buf, 0, measurelog.Binary, measurelog.SHA256)
	return buf[:n]
}

// TestRestore: lists, counters, PCRs and policies come back identical
// after a restart; a container that exited meanwhile is archived; a torn
// tail is cut; a corrupt journal quarantines only its container.
func TestRestore(t *testing.T) {
	needRoot(t)
	state := t.TempDir()
	var log1 bytes.Buffer
	r := openRegistry(t, state, &log1)
	pidA := harness.StartSleeper(t).Pid
	pidB := harness.StartSleeper(t).Pid
	sleeperC := harness.StartSleeper(t)
	pidC := sleeperC.Pid
	pidD := harness.StartSleeper(t).Pid
	var nss []*Namespace
	for i, pid := range []int{pidA, pidB, pidC, pidD} {
		ns, err := r.Attach(fmt.Sprintf("c%d", i), pid, []byte(`{"ociVersion":"1.0.2"}`))
		if err != nil {
			t.Fatal(err)
		}
		nss = append(nss, ns)
	}
	// Concurrent records: group commit must keep every list in record order.
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				ns := nss[(g+i)%len(nss)]
				if err := r.Record(ns, bufEntry(t, ns, fmt.Sprintf("/f-%d-%d", g, i))); err != nil {
					t.Error(err)
				}
			}
		}(g)
	}
	wg.Wait()
	if err := nss[0].LoadPolicy(mustParse(t, "measure func=BPRM_CHECK\n")); err != nil {
		t.Fatal(err)
	}
	if err := nss[0].LoadPolicy(mustParse(t, "measure func=MMAP_CHECK\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.SetMount("c1", "/sys/kernel/security"); err != nil {
		t.Fatal(err)
	}
	if syncs := r.JournalSyncs(); syncs >= 400 {
		t.Logf("no group commit: %d syncs for 400 records", syncs)
	}
	want := map[string][]byte{HostID: listBytes(t, r.Host().List)}
	wantPolicy := nss[0].Policy().String()
	for _, ns := range nss {
		want[ns.ID] = listBytes(t, ns.List)
	}
	wantHostPCR := r.Host().List.PCR(measurelog.SHA256, 10)
	r.Close() // a shutdown keeps the state

	sleeperC.Stop() // c2 exits while the daemon is down
	// (Its init dies by its parent's death signal: wait for that, a
	// loaded machine may take a moment.)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if _, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pidC)); err != nil {
			break // gone (or a zombie: no namespaces left)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// c1's journal gets a torn tail (a record cut short by a crash).
	j1 := filepath.Join(state, "ns", "c1", "list.journal")
	rec := bufEntry(t, nss[1], "/torn").AppendBinary(nil, measurelog.SHA1)
	appendFile(t, j1, rec[:len(rec)-7])
	// c3's journal gets a corrupt record in the middle of its file.
	j3 := filepath.Join(state, "ns", "c3", "list.journal")
	data, err := os.ReadFile(j3)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), data...)
	copy(bad[len(bad)/2:], bytes.Repeat([]byte{0xff}, 16))
	if err := os.WriteFile(j3, bad, 0o600); err != nil {
		t.Fatal(err)
	}

	var log2 bytes.Buffer
	defer func(n int) { replayProgressEvery = n }(replayProgressEvery)
	replayProgressEvery = 100 // the host journal has 400 records and more
	r2 := openRegistry(t, state, &log2)
	defer r2.Close()
	if got := listBytes(t, r2.Host().List); !bytes.Equal(got, want[HostID]) {
		t.Errorf("host list differs after restart: %d bytes, want %d", len(got), len(want[HostID]))
	}
	if got := r2.Host().List.PCR(measurelog.SHA256, 10); !bytes.Equal(got, wantHostPCR) {
		t.Errorf("host PCR 10 %x, want %x", got, wantHostPCR)
	}
	restored := r2.Restore()
	var ids []string
	for _, x := range restored {
		ids = append(ids, x.NS.ID)
	}
	if strings.Join(ids, ",") != "c0,c1,c3" {
		t.Fatalf("restored %v, want c0,c1,c3 (c2 exited)\n%s", ids, log2.String())
	}
	for _, x := range restored {
		if x.NS.ID == "c3" {
			continue // damaged: checked below
		}
		if got := listBytes(t, x.NS.List); !bytes.Equal(got, want[x.NS.ID]) {
			t.Errorf("%s: list differs after restart (%d entries)", x.NS.ID, x.NS.List.Len())
		}
	}
	c0, _ := r2.Get("c0")
	if got := c0.Policy().String(); got != wantPolicy || c0.DefaultPolicyActive() {
		t.Errorf("c0 policy %q (default active %v), want %q", got, c0.DefaultPolicyActive(), wantPolicy)
	}
	c1, _ := r2.Get("c1")
	if c1.Policy().String() != mustParse(t, "measure func=FILE_CHECK\n").String() || !c1.DefaultPolicyActive() {
		t.Errorf("c1 policy %q, want the default", c1.Policy().String())
	}
	if rec := c1.StateRecord(); rec == nil || rec.Mount != "/sys/kernel/security" || rec.Pid != pidB {
		t.Errorf("c1 record %+v", rec)
	}
	logs := log2.String()
	for _, w := range []string{"torn tail cut", "container state archived", "journal damaged: valid prefix restored", "journal replay progress"} {
		if !strings.Contains(logs, w) {
			t.Errorf("log lacks %q:\n%s", w, logs)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(state, "archive", "c2.*")); len(m) != 1 {
		t.Errorf("c2 archived: %v", m)
	}
	// c3: the original kept byte for byte, the valid prefix and a
	// violation entry served, the namespace degraded.
	if m, _ := filepath.Glob(j3 + ".corrupt-*"); len(m) != 1 {
		t.Errorf("c3's original journal not kept: %v", m)
	} else if got, _ := os.ReadFile(m[0]); !bytes.Equal(got, bad) {
		t.Errorf("c3's kept journal differs from the damaged original")
	}
	c3, _ := r2.Get("c3")
	if last := c3.List.Entry(c3.List.Len() - 1); !last.Violation || last.Name() != JournalDamagedName || c3.List.Violations() != 1 {
		t.Errorf("c3's list ends with %+v (violations %d), want a %s violation", last, c3.List.Violations(), JournalDamagedName)
	}
	got3 := listBytes(t, c3.List)
	prefix := got3[:len(got3)-len(c3.List.Entry(c3.List.Len()-1).AppendBinary(nil, measurelog.SHA256))]
	if len(prefix) == 0 || len(prefix) >= len(want["c3"]) || !bytes.HasPrefix(want["c3"], prefix) {
		t.Errorf("c3 restored %d bytes of list, not a proper prefix of the %d before", len(prefix), len(want["c3"]))
	}
	if r2.Degraded(c3) == "" || r2.Degraded(c0) != "" {
		t.Errorf("degraded: c3 %q, c0 %q", r2.Degraded(c3), r2.Degraded(c0))
	}
	// Restored containers go on recording into the same journals.
	if err := r2.Record(c1, bufEntry(t, c1, "/after")); err != nil {
		t.Fatal(err)
	}
	if n := journalNames(t, j1); n[len(n)-1] != "/after" {
		t.Errorf("c1 journal ends with %q", n[len(n)-1])
	}
	// Detach archives.
	if err := r2.Detach("c0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(state, "ns", "c0")); !os.IsNotExist(err) {
		t.Errorf("c0 state still under ns/ after detach: %v", err)
	}
	_ = pidD
}

func appendFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRecordJournaled: Record throughput with a state directory, from
// several goroutines (group commit shares the fsyncs).
func BenchmarkRecordJournaled(b *testing.B) {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	r, err := NewRegistry(Options{StateDir: b.TempDir(), Log: l})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			e, _ := measurelog.NewEntry("ima-ng", 10, measurelog.Measurement{
				FileDigest: measurelog.SHA256.Sum([]byte(fmt.Sprint(i, &i))), FileAlgo: measurelog.SHA256, Name: "/x",
			})
			if err := r.Record(r.Host(), e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/float64(r.JournalSyncs()), "records/sync")
}

// TestHostJournalCorrupt: a corrupt record in the host's journal does not
// stop the daemon: the host list goes on from the entries before it, the
// damage is saved and logged, new records are journaled after the cut.
func TestHostJournalCorrupt(t *testing.T) {
	state := t.TempDir()
	var log1 bytes.Buffer
	r := openRegistry(t, state, &log1)
	for i := 0; i < 10; i++ {
		if err := r.Record(r.Host(), bufEntry(t, r.Host(), fmt.Sprintf("/h%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	path := filepath.Join(state, "host.journal")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copy(data[len(data)/2:], bytes.Repeat([]byte{0xff}, 16))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var log2 bytes.Buffer
	r2 := openRegistry(t, state, &log2)
	defer r2.Close()
	n := r2.Host().List.Len()
	if n == 0 || n >= 11 {
		t.Fatalf("host list has %d entries after a corrupt record in the middle", n)
	}
	if !strings.Contains(log2.String(), "journal damaged") || r2.Degraded(r2.Host()) == "" {
		t.Errorf("not logged or not degraded (%q):\n%s", r2.Degraded(r2.Host()), log2.String())
	}
	if m, _ := filepath.Glob(path + ".corrupt*"); len(m) != 1 {
		t.Errorf("original not kept: %v", m)
	}
	if err := r2.Record(r2.Host(), bufEntry(t, r2.Host(), "/after")); err != nil {
		t.Fatal(err)
	}
	if names := journalNames(t, path); names[len(names)-1] != "/after" || names[len(names)-2] != JournalDamagedName || len(names) != n+1 {
		t.Errorf("journal after the cut: %q", names)
	}
}

// TestRecordAll: a batch across two containers is journaled with one fsync
// (not one per entry), lists every entry in order (and in the host list),
// and comes back identical after a restart; a batch with an entry of a
// detached container records the others and reports that one.
func TestRecordAll(t *testing.T) {
	needRoot(t)
	state := t.TempDir()
	var log bytes.Buffer
	r := openRegistry(t, state, &log)
	a, err := r.Attach("a", harness.StartSleeper(t).Pid, []byte(`{"ociVersion":"1.0.2"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Attach("b", harness.StartSleeper(t).Pid, []byte(`{"ociVersion":"1.0.2"}`))
	if err != nil {
		t.Fatal(err)
	}
	var items []Item
	for i := 0; i < 200; i++ {
		ns := []*Namespace{a, b, r.Host()}[i%3]
		items = append(items, Item{NS: ns, Entry: bufEntry(t, ns, fmt.Sprintf("/batch-%d", i))})
	}
	syncs := r.JournalSyncs()
	lenA, lenB, lenHost := a.List.Len(), b.List.Len(), r.Host().List.Len()
	if err := r.RecordAll(items); err != nil {
		t.Fatal(err)
	}
	if n := r.JournalSyncs() - syncs; n != 1 {
		t.Errorf("%d journal flushes for one batch of 200, want 1", n)
	}
	for _, c := range []struct {
		ns   *Namespace
		from int
		want int
	}{{a, lenA, 67}, {b, lenB, 67}, {r.Host(), lenHost, 200}} {
		if got := c.ns.List.Len() - c.from; got != c.want {
			t.Errorf("%s: %d entries added, want %d", c.ns.ID, got, c.want)
		}
	}
	// The host list holds the batch in order.
	for i := 0; i < 200; i++ {
		if got, want := r.Host().List.Entry(lenHost+i).Name(), fmt.Sprintf("/batch-%d", i); got != want {
			t.Fatalf("host entry %d: %s, want %s", lenHost+i, got, want)
		}
	}
	want := map[string][]byte{HostID: listBytes(t, r.Host().List), "a": listBytes(t, a.List), "b": listBytes(t, b.List)}

	// An entry of a detached container fails; the rest of the batch lands.
	if err := r.Detach("b"); err != nil {
		t.Fatal(err)
	}
	err = r.RecordAll([]Item{{NS: a, Entry: bufEntry(t, a, "/after-1")}, {NS: b, Entry: bufEntry(t, b, "/lost")}, {NS: a, Entry: bufEntry(t, a, "/after-2")}})
	if !errors.Is(err, ErrDetached) || !strings.Contains(err.Error(), "record in b") {
		t.Errorf("batch with a detached container's entry: %v, want ErrDetached naming b", err)
	}
	if n := a.List.Len(); a.List.Entry(n-2).Name() != "/after-1" || a.List.Entry(n-1).Name() != "/after-2" {
		t.Errorf("a's last entries: %s, %s", a.List.Entry(n-2).Name(), a.List.Entry(n-1).Name())
	}
	want["a"] = listBytes(t, a.List)
	want[HostID] = listBytes(t, r.Host().List)
	r.Close()

	r2 := openRegistry(t, state, &log)
	defer r2.Close()
	r2.Restore()
	a2, ok := r2.Get("a")
	if !ok {
		t.Fatal("a not restored")
	}
	if !bytes.Equal(listBytes(t, a2.List), want["a"]) || !bytes.Equal(listBytes(t, r2.Host().List), want[HostID]) {
		t.Error("lists after restore differ from what RecordAll acknowledged")
	}
}

// TestRecordAllHostForm: an Item with Host puts Entry in its container's
// list and journal and Host in the host's, in memory and on a state
// directory, where a restart replays each list as it was.
func TestRecordAllHostForm(t *testing.T) {
	needRoot(t)
	for _, withState := range []bool{false, true} {
		t.Run(fmt.Sprintf("state=%v", withState), func(t *testing.T) {
			opts := Options{DefaultContainerPolicy: mustParse(t, "measure func=FILE_CHECK\n")}
			if withState {
				opts.StateDir = t.TempDir()
			}
			r := newTestRegistry(t, opts)
			c, err := r.Attach("c", harness.StartSleeper(t).Pid, []byte(`{"ociVersion":"1.0.2"}`))
			if err != nil {
				t.Fatal(err)
			}
			view := bufEntry(t, c, "/bin/view")
			kernel, err := measurelog.NewEntry(measurelog.TemplateIMANSReg, DefaultPCR, measurelog.Measurement{
				FileDigest: measurelog.SHA256.Sum([]byte("/bin/view")), FileAlgo: measurelog.SHA256, Name: "/bin/view", Namespace: "c:1",
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.RecordAll([]Item{{NS: c, Entry: view, Host: kernel}}); err != nil {
				t.Fatal(err)
			}
			check := func(when string, r *Registry, c *Namespace) {
				t.Helper()
				if got := c.List.Entry(c.List.Len() - 1); got.Template != measurelog.TemplateIMANG || got.Name() != "/bin/view" {
					t.Errorf("%s: container's last entry %s %q, want the ima-ng view", when, got.Template, got.Name())
				}
				if got := r.Host().List.Entry(r.Host().List.Len() - 1); got.Template != measurelog.TemplateIMANSReg || got.Name() != "/bin/view" {
					t.Errorf("%s: host's last entry %s %q, want the ima-nsreg record", when, got.Template, got.Name())
				}
			}
			check("recorded", r, c)
			if !withState {
				return
			}
			r.Close()
			r2 := newTestRegistry(t, opts)
			r2.Restore()
			c2, ok := r2.Get("c")
			if !ok {
				t.Fatal("c not restored")
			}
			check("restored", r2, c2)
		})
	}
}
