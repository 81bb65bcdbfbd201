package fanotify_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// TestFileCheck: FILE_CHECK with the open's mask (read from the blocked
// open system call), and an open_writers violation for a file measured
// while a task of the container holds it open for write.
func TestFileCheck(t *testing.T) {
	e := newEnv(t, fanotify.Options{})
	c := e.container("files")
	c.setPolicy("measure func=FILE_CHECK mask=MAY_READ")

	c.mustExec("/bin/sh", "-c", "echo hello > /tmp/data")
	if n := len(named(c.ns.List, "/tmp/data")); n != 0 {
		t.Fatalf("write-only open measured under mask=MAY_READ (%d entries)", n)
	}
	c.mustExec("/bin/sh", "-c", "head -n1 /tmp/data; head -n1 /tmp/data")
	got := named(c.ns.List, "/tmp/data")
	if len(got) != 1 {
		t.Fatalf("/tmp/data: %d entries after two reads, want 1", len(got))
	}
	if d, want := fileDigest(t, got[0]), fmt.Sprintf("%x", sha256.Sum256([]byte("hello\n"))); d != want {
		t.Fatalf("/tmp/data digest %s, want %s", d, want)
	}

	v0 := c.ns.List.Violations()
	c.mustExec("/bin/sh", "-c", "exec 3>>/tmp/log; echo line >&3; head -n1 /tmp/log")
	if v := c.ns.List.Violations(); v != v0+1 {
		t.Fatalf("violations %d, want %d (open_writers)", v, v0+1)
	}
	var viol bool
	for _, en := range entries(c.ns.List) {
		if en.Violation && en.Name() == "/tmp/log" {
			viol = true
		}
	}
	if !viol {
		t.Fatal("no violation entry named /tmp/log")
	}
	// The write closed: a read of the changed file is measured without one.
	c.mustExec("/bin/sh", "-c", "head -n1 /tmp/log")
	if v := c.ns.List.Violations(); v != v0+1 {
		t.Fatalf("violations %d after the writer closed, want %d", v, v0+1)
	}

	// ToMToU: a write open of the measured /tmp/data while a task (here the
	// writer itself, through fd 3) holds it open for read.
	c.mustExec("/bin/sh", "-c", "exec 3</tmp/data; echo more >> /tmp/data")
	if v := c.ns.List.Violations(); v != v0+2 {
		t.Fatalf("violations %d after a write open of a file open for read, want %d (ToMToU)", v, v0+2)
	}
	if n := len(violations(c.ns.List, "/tmp/data")); n != 1 {
		t.Fatalf("%d violation entries named /tmp/data, want 1", n)
	}
	// Measured again (it changed), then written with no reader: no ToMToU.
	c.mustExec("/bin/sh", "-c", "head -n1 /tmp/data")
	c.mustExec("/bin/sh", "-c", "echo again >> /tmp/data")
	if v := c.ns.List.Violations(); v != v0+2 {
		t.Fatalf("violations %d after a write open with no reader, want %d", v, v0+2)
	}
}

// violations returns l's violation entries named name.
func violations(l *measurelog.List, name string) []*measurelog.Entry {
	var out []*measurelog.Entry
	for _, en := range entries(l) {
		if en.Violation && en.Name() == name {
			out = append(out, en)
		}
	}
	return out
}

// TestFailureModes: a file that cannot be hashed in time is allowed with a
// violation entry in a measure-only container and denied in a container
// that appraises; every event is answered.
func TestFailureModes(t *testing.T) {
	var mu sync.Mutex
	denials := map[string][]string{} // namespace → reasons
	e := newEnv(t, fanotify.Options{Timeout: 2 * time.Millisecond, OnAnswer: func(a fanotify.Answer) {
		if !a.Allow {
			mu.Lock()
			denials[a.Namespace] = append(denials[a.Namespace], a.Reason)
			mu.Unlock()
		}
	}})
	cm := e.container("measureonly")
	ca := e.container("appraising")
	big := strings.Repeat("imafs\n", 8<<20) // 48 MiB: not hashed in 2ms
	for _, c := range []*container{cm, ca} {
		if err := os.WriteFile(c.path("/tmp/big"), []byte(big), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cm.setPolicy("measure func=FILE_CHECK")
	ca.setPolicy("appraise func=FILE_CHECK fowner=0\nmeasure func=FILE_CHECK")

	if out, err := cm.exec("/bin/sh", "-c", "head -c 5 /tmp/big"); err != nil || out != "imafs" {
		t.Fatalf("measure-only: read of /tmp/big: %v %q", err, out)
	}
	// The timeout answered first; the worker records the violation when
	// its hash gives up.
	var viol bool
	for deadline := time.Now().Add(10 * time.Second); !viol && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, en := range entries(cm.ns.List) {
			viol = viol || (en.Violation && en.Name() == "/tmp/big")
		}
	}
	if !viol || cm.ns.List.Violations() == 0 {
		t.Fatal("measure-only: no violation entry for the file that could not be measured")
	}
	out, err := ca.exec("/bin/sh", "-c", "head -c 5 /tmp/big")
	if err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("appraising: read of unhashable /tmp/big: %v %q, want EPERM", err, out)
	}
	if s := e.eng.Stats(); s.Errors+s.Timeouts == 0 {
		t.Fatalf("stats show no failure: %+v", s)
	}
	// The denial is the failure mode's, and only the appraising container
	// fails closed.
	mu.Lock()
	defer mu.Unlock()
	if len(denials[cm.ns.ID]) != 0 {
		t.Errorf("measure-only container denied: %v", denials[cm.ns.ID])
	}
	if len(denials[ca.ns.ID]) == 0 {
		t.Error("appraising container: no denial reached OnAnswer")
	}
	for _, r := range denials[ca.ns.ID] {
		if r != fanotify.ReasonTimeout && r != fanotify.ReasonCollectData {
			t.Errorf("appraising container denied for %q, want %q or %q", r, fanotify.ReasonTimeout, fanotify.ReasonCollectData)
		}
	}
}

// TestAuditAndDont: an audit rule logs one structured record per container
// and file; dont_measure (by file system magic and by owner) wins as in the
// kernel's first-match order.
func TestAuditAndDont(t *testing.T) {
	e := newEnv(t, fanotify.Options{})
	c := e.container("audited", "busybox-a", "busybox-b")
	if err := os.Chown(c.path("/bin/busybox-b"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	c.setPolicy("dont_measure fowner=1000\naudit func=BPRM_CHECK\nmeasure func=BPRM_CHECK")
	c.mustExec("/bin/busybox-a", "true")
	c.mustExec("/bin/busybox-a", "true")
	c.mustExec("/bin/busybox-b", "true")
	if n := len(named(c.ns.List, "/bin/busybox-a")); n != 1 {
		t.Errorf("/bin/busybox-a: %d entries, want 1", n)
	}
	if n := len(named(c.ns.List, "/bin/busybox-b")); n != 0 {
		t.Errorf("/bin/busybox-b (fowner=1000, dont_measure): %d entries, want 0", n)
	}
	audits := map[string]int{}
	for _, en := range e.logs.AllEntries() {
		if en.Data["audit"] == "ima" && en.Data["id"] == "audited" {
			audits[fmt.Sprint(en.Data["file"])]++
			if h, _ := en.Data["hash"].(string); !strings.HasPrefix(h, "sha256:") || en.Data["func"] != "BPRM_CHECK" {
				t.Errorf("audit record fields: %v", en.Data)
			}
		}
	}
	if audits["/bin/busybox-a"] != 1 || audits["/bin/busybox-b"] != 1 {
		t.Errorf("audit records per file: %v, want one each for /bin/busybox-a and /bin/busybox-b", audits)
	}

	d := e.container("tmpfsexempt", "busybox-a")
	d.setPolicy("dont_measure fsmagic=0x01021994\nmeasure func=BPRM_CHECK")
	d.mustExec("/bin/busybox-a", "true")
	if n := len(named(d.ns.List, "/bin/busybox-a")); n != 0 {
		t.Errorf("dont_measure fsmagic=TMPFS: %d entries for a tmpfs file", n)
	}
}

// TestFloodIsolation: a container flooding its queue gets failure-mode
// answers (violation entries for execs let through unmeasured), while
// another container's exec is still measured normally.
func TestFloodIsolation(t *testing.T) {
	e := newEnv(t, fanotify.Options{Workers: 1, ContainerWorkers: 1, QueueLen: 1})
	a := e.container("flood", "busybox-x")
	b := e.container("calm", "busybox-y")
	const n = 16
	for i := 0; i < n; i++ {
		copyFile(t, a.path("/bin/busybox-x"), a.path(fmt.Sprintf("/tmp/x%d", i)))
	}
	if err := os.WriteFile(a.path("/tmp/big"), []byte(strings.Repeat("imafs\n", 25<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	a.setPolicy("measure func=BPRM_CHECK\nmeasure func=FILE_CHECK")
	b.setPolicy("measure func=BPRM_CHECK")
	// The one worker hashes 150 MiB while n first-time execs arrive against
	// a queue of one.
	var loop strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&loop, "/tmp/x%d true & ", i)
	}
	a.mustExec("/bin/sh", "-c", "head -c1 /tmp/big >/tmp/out & sleep 0.01; "+loop.String()+"wait")
	b.mustExec("/bin/busybox-y", "true")
	if n := len(named(b.ns.List, "/bin/busybox-y")); n != 1 || b.ns.List.Violations() != 0 {
		t.Fatalf("calm container: %d entries, %d violations; want 1 and 0", n, b.ns.List.Violations())
	}
	s := e.eng.Stats()
	if s.Overflows == 0 {
		t.Fatalf("the flood never filled the queue (stats %+v)", s)
	}
	measured := 0
	for i := 0; i < n; i++ {
		measured += len(named(a.ns.List, fmt.Sprintf("/tmp/x%d", i)))
	}
	if int64(measured)+a.ns.List.Violations() < n {
		t.Fatalf("flood: %d measured + %d violations < %d execs", measured, a.ns.List.Violations(), n)
	}
}

// TestSelfNeverWaits: while the only worker is busy hashing a big file for
// a container, the daemon's own open of a file on that container's marked
// file system is answered at once by the reader.
func TestSelfNeverWaits(t *testing.T) {
	e := newEnv(t, fanotify.Options{Workers: 1, ContainerWorkers: 1})
	c := e.container("busy")
	if err := os.WriteFile(c.path("/tmp/big"), []byte(strings.Repeat("imafs\n", 35<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.path("/tmp/small"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.setPolicy("measure func=FILE_CHECK")
	done := make(chan error, 1)
	go func() { _, err := c.exec("/bin/sh", "-c", "head -c1 /tmp/big"); done <- err }()
	// Wait until the container's open is being decided.
	for deadline := time.Now().Add(10 * time.Second); e.eng.Stats().Events == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the container's open never reached the engine")
		}
	}
	f, err := os.Open(c.path("/tmp/small")) // our own open, on the marked tmpfs
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if n := len(named(c.ns.List, "/tmp/big")); n != 0 {
		t.Fatalf("the big file was measured before our own open returned: our open waited on the worker")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(named(c.ns.List, "/tmp/big")); n != 1 {
		t.Fatalf("/tmp/big: %d entries, want 1", n)
	}
	if n := len(named(c.ns.List, "/tmp/small")); n != 0 {
		t.Fatalf("the daemon's own open was measured")
	}
}

// TestDetachReleasesWaiters: detaching a container (its init exiting, or
// imafs detach) closes its group; the kernel allows what was pending, and
// nothing is left blocked.
func TestDetachReleasesWaiters(t *testing.T) {
	e := newEnv(t, fanotify.Options{Workers: 1, ContainerWorkers: 1})
	c := e.container("leaving")
	if err := os.WriteFile(c.path("/tmp/big"), []byte(strings.Repeat("imafs\n", 35<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.setPolicy("appraise func=FILE_CHECK\nmeasure func=FILE_CHECK")
	done := make(chan error, 1)
	go func() {
		_, err := c.exec("/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8; do head -c1 /tmp/big; done")
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); e.eng.Stats().Events == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the container's open never reached the engine")
		}
	}
	if err := e.reg.Detach(c.id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done: // denied (no security.ima) or allowed by the closed group: not blocked
	case <-time.After(30 * time.Second):
		t.Fatal("a task of the detached container is still blocked")
	}
}

// TestPolicyLoadWidensMarks: a FILE_CHECK rule loaded by the container's
// root (no explicit Sync) makes the engine watch opens within a poll.
func TestPolicyLoadWidensMarks(t *testing.T) {
	e := newEnv(t, fanotify.Options{})
	c := e.container("widen")
	c.setPolicy("measure func=BPRM_CHECK") // opens not watched yet
	p, err := policy.Parse("measure func=FILE_CHECK")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ns.LoadPolicy(p); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		name := fmt.Sprintf("/tmp/f%d", i)
		if err := os.WriteFile(c.path(name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		c.mustExec("/bin/sh", "-c", "head -c1 "+name+" >/dev/null")
		if len(named(c.ns.List, name)) == 1 {
			return
		}
		if i > 100 {
			t.Fatal("opens never measured after a FILE_CHECK rule was loaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
