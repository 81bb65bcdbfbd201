package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/mmapsrc"
	"github.com/imafs/imafs/policy"
)

// mmapFixture is the mmap component started on a real registry with one
// attached container (a sleeper in its own pid and mount namespaces) and
// the real BPF source.
type mmapFixture struct {
	m    *mmapSource
	reg  *imans.Registry
	ns   *imans.Namespace
	pid  int
	hook *logtest.Hook
}

func newMmapFixture(t *testing.T) *mmapFixture {
	t.Helper()
	harness.RequireRoot(t)
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.DebugLevel)
	hook := logtest.NewLocal(log)
	reg, err := imans.NewRegistry(imans.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	m := &mmapSource{cfg: MmapConfig{Mode: "on"}, fan: &fanotifySource{}, status: &sourceStatus{}}
	if err := m.Start(&Env{Log: log, Reg: reg}); err != nil {
		t.Skipf("no mmap source on this kernel: %v", err)
	}
	t.Cleanup(func() { m.Stop(false) })
	s := harness.StartSleeper(t, "--mount")
	ns, err := reg.Attach("mmap-c1", s.Pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &mmapFixture{m: m, reg: reg, ns: ns, pid: s.Pid, hook: hook}
}

func (f *mmapFixture) load(t *testing.T, text string) {
	t.Helper()
	rules, err := policy.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.ns.LoadPolicy(rules); err != nil {
		t.Fatal(err)
	}
}

// entries returns the names of ns's entries and, per name, its digest
// ("sha256:HEX", "" for a violation).
func entries(ns *imans.Namespace) map[string][]string {
	out := map[string][]string{}
	for i := 0; i < ns.List.Len(); i++ {
		e := ns.List.Entry(i)
		d := ""
		if algo, sum, err := e.FileDigest(); err == nil && !e.Violation {
			d = algo + ":" + hex.EncodeToString(sum)
		}
		out[e.Name()] = append(out[e.Name()], d)
	}
	return out
}

// waitEntry waits until ns's list holds name.
func waitEntry(t *testing.T, ns *imans.Namespace, name string) []string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if d, ok := entries(ns)[name]; ok {
			return d
		}
	}
	t.Fatalf("%s: no entry %q in %v", ns.ID, name, entries(ns))
	return nil
}

// TestMmapSourceMeasures: a dynamically linked program run in the
// container maps libc executable; its list then holds libc.so.6 with the
// file's sha256, under the container's path; the host list holds it too.
func TestMmapSourceMeasures(t *testing.T) {
	f := newMmapFixture(t)
	harness.RequireTools(t, "nsenter")
	f.load(t, "measure func=MMAP_CHECK mask=MAY_EXEC\n")
	time.Sleep(2 * mmapPolicyPoll)
	const libcPath = "/usr/lib/x86_64-linux-gnu/libc.so.6" // where ld.so's /lib/... resolves to
	if _, err := os.Stat(libcPath); err != nil {
		t.Skipf("no %s", libcPath)
	}
	out, err := exec.Command("nsenter", "-t", fmt.Sprint(f.pid), "-p", "-m", "--", "/usr/bin/sleep", "1").CombinedOutput() // alive while the source opens its mapping (a process gone first is <mmap-unmeasured>, TestMmapSourceViolations)
	if err != nil {
		t.Fatalf("nsenter: %v\n%s", err, out)
	}
	data, err := os.ReadFile(libcPath)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	if got := waitEntry(t, f.ns, libcPath); len(got) != 1 || got[0] != want {
		t.Errorf("%s: %q, want one %s", libcPath, got, want)
	}
	if _, ok := entries(f.reg.Host())[libcPath]; !ok {
		t.Errorf("host list lacks %s", libcPath)
	}
}

// TestMmapSourceViolations: what the source could not measure becomes a
// violation entry: a mapping whose file could not be opened (Err), lost
// mappings of the container's mount namespace and of an unknown one (the
// host list), a file changed since it was mapped (ToMToU), and a policy
// that appraises MMAP_CHECK where the mechanism cannot deny (with a log
// line saying so).
func TestMmapSourceViolations(t *testing.T) {
	f := newMmapFixture(t)
	f.load(t, "measure func=MMAP_CHECK mask=MAY_EXEC\n")
	pinned := f.ns.Pinned
	f.m.handle(&mmapsrc.Event{Kind: mmapsrc.Mmap, Pid: f.pid, Tid: f.pid, PidNS: pinned.PidNS.Ino, MntNS: pinned.MntNS.Ino,
		Dev: 1, Ino: 2, Fd: -1, Err: errors.New("open mapped file: no such file")})
	waitEntry(t, f.ns, MmapUnmeasuredName)

	f.m.handle(&mmapsrc.Event{Kind: mmapsrc.Lost, MntNS: pinned.MntNS.Ino, Count: 3, Fd: -1})
	waitEntry(t, f.ns, MmapLostName)
	hostBefore := f.reg.Host().List.Violations()
	f.m.handle(&mmapsrc.Event{Kind: mmapsrc.Lost, MntNS: 0, Count: 1, Fd: -1})
	waitEntry(t, f.reg.Host(), MmapLostName)
	if got := f.reg.Host().List.Violations(); got <= hostBefore {
		t.Errorf("host violations %d after a lost event of no container, want more than %d", got, hostBefore)
	}

	file, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f.m.handle(&mmapsrc.Event{Kind: mmapsrc.Mmap, Pid: f.pid, Tid: f.pid, PidNS: pinned.PidNS.Ino, MntNS: pinned.MntNS.Ino,
		File: file, Path: "/changed-lib.so", Changed: true, Fd: -1})
	got := waitEntry(t, f.ns, "/changed-lib.so")
	if len(got) != 2 || got[0] != "" || got[1] == "" {
		t.Errorf("/changed-lib.so: %q, want a ToMToU violation, then the measurement", got)
	}

	before := f.ns.List.Violations()
	f.load(t, "appraise func=MMAP_CHECK appraise_type=imasig\n")
	waitEntry(t, f.ns, MmapAppraiseUnenforcedName)
	if f.ns.List.Violations() != before+1 {
		t.Errorf("violations %d after the appraise load, want %d", f.ns.List.Violations(), before+1)
	}
	found := false
	for _, e := range f.hook.AllEntries() {
		if e.Level == logrus.WarnLevel && e.Data["id"] == f.ns.ID && e.Data["mechanism"] == mmapsrc.MechanismTracepoint &&
			e.Message == "mmap source: the policy appraises executable mappings, which cannot be enforced here: mappings are measured, never refused" {
			err, _ := e.Data[logrus.ErrorKey].(error)
			found = errors.Is(err, mmapsrc.ErrCannotDeny)
		}
	}
	if !found {
		t.Error("no log line saying the appraise rule cannot be enforced")
	}
}

// TestMmapSourceKernelDigest: an event whose digest the kernel computed
// (the BPF LSM mechanism) is recorded with that digest, without a file to
// hash; with a file, its owner and mode too.
func TestMmapSourceKernelDigest(t *testing.T) {
	f := newMmapFixture(t)
	f.load(t, "measure func=MMAP_CHECK mask=MAY_EXEC\n")
	pinned := f.ns.Pinned
	digest := sha256.Sum256([]byte("a library hashed by bpf_ima_file_hash"))
	file, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []mmapsrc.Event{
		{Path: "/lib/kernel-hashed.so"},
		{Path: "/lib/kernel-hashed-with-file.so", File: file},
	} {
		ev.Kind, ev.Pid, ev.Tid, ev.PidNS, ev.MntNS, ev.Fd = mmapsrc.Mmap, f.pid, f.pid, pinned.PidNS.Ino, pinned.MntNS.Ino, -1
		ev.Digest, ev.DigestAlgo = digest[:], "sha256"
		f.m.handle(&ev)
		if got := waitEntry(t, f.ns, ev.Path); len(got) != 1 || got[0] != "sha256:"+hex.EncodeToString(digest[:]) {
			t.Errorf("%s: %q, want the kernel's digest once", ev.Path, got)
		}
	}
	// A kernel hashing in SHA-1 (ima_hash_algo's default) and a
	// namespace in sha256: the entry is the file's sha256, read from the
	// file the source opened, never a SHA-1 labelled sha256.
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(self)
	if file, err = os.Open("/proc/self/exe"); err != nil { // the receiver closed the first
		t.Fatal(err)
	}
	sha1Digest := make([]byte, 20)
	ev := mmapsrc.Event{Kind: mmapsrc.Mmap, Pid: f.pid, Tid: f.pid, PidNS: pinned.PidNS.Ino, MntNS: pinned.MntNS.Ino, Fd: -1,
		Path: "/lib/kernel-sha1.so", File: file, Digest: sha1Digest, DigestAlgo: "sha1"}
	f.m.handle(&ev)
	if got := waitEntry(t, f.ns, ev.Path); len(got) != 1 || got[0] != "sha256:"+hex.EncodeToString(want[:]) {
		t.Errorf("%s: %q, want the file's sha256 once", ev.Path, got)
	}
}

// TestSourceModes: --fanotify auto runs the engine unless the kernel
// source runs; --mmap auto runs the mmap source when the engine runs; the
// zero Config runs neither; on makes a failure fatal; a bad mode is an
// error.
func TestSourceModes(t *testing.T) {
	series := filepath.Join(t.TempDir(), "namespaces")
	if err := os.WriteFile(series, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	noSeries := filepath.Join(t.TempDir(), "none")
	tests := []struct {
		name, kernelPath, fan string
		fanOn, fanRequired    bool
		fanErr                bool
	}{
		{"zero config", noSeries, "", false, false, false},
		{"auto, stock kernel", noSeries, "auto", true, false, false},
		{"auto, imafs series", series, "auto", false, false, false},
		{"on, imafs series", series, "on", true, true, false},
		{"off", noSeries, "off", false, false, false},
		{"bad", noSeries, "maybe", false, false, true},
	}
	for _, tt := range tests {
		f := &fanotifySource{cfg: FanotifyConfig{Mode: tt.fan}, kernel: &kernelSource{cfg: KernelSourceConfig{Mode: "auto", NamespacesPath: tt.kernelPath}}}
		on, required, err := f.enabled()
		if on != tt.fanOn || required != tt.fanRequired || (err != nil) != tt.fanErr {
			t.Errorf("%s: fanotify on %v required %v err %v, want %v %v %v", tt.name, on, required, err, tt.fanOn, tt.fanRequired, tt.fanErr)
		}
	}
	running := &fanotifySource{eng: &fanotify.Engine{}}
	for _, tt := range []struct {
		mode         string
		fan          *fanotifySource
		on, required bool
		wantErr      bool
	}{
		{"", running, false, false, false},
		{"auto", running, true, false, false},
		{"auto", &fanotifySource{}, false, false, false},
		{"on", &fanotifySource{}, true, true, false},
		{"off", running, false, false, false},
		{"sometimes", running, false, false, true},
	} {
		m := &mmapSource{cfg: MmapConfig{Mode: tt.mode}, fan: tt.fan}
		on, required, err := m.enabled()
		if on != tt.on || required != tt.required || (err != nil) != tt.wantErr {
			t.Errorf("--mmap %q (fanotify running %v): on %v required %v err %v, want %v %v %v", tt.mode, tt.fan.running(), on, required, err, tt.on, tt.required, tt.wantErr)
		}
	}
}
