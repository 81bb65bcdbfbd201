package imans

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/nsresolve"
	"github.com/imafs/imafs/policy"
)

func needRoot(t *testing.T) {
	t.Helper()
	harness.RequireRoot(t)
	harness.RequireTools(t, "unshare")
}

func newTestRegistry(t *testing.T, opts Options) *Registry {
	t.Helper()
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetLevel(logrus.WarnLevel)
	opts.Log = log
	r, err := NewRegistry(opts)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func names(l *measurelog.List) []string {
	var out []string
	for i := 0; i < l.Len(); i++ {
		out = append(out, l.Entry(i).Name())
	}
	return out
}

func TestHostStartsWithBootAggregate(t *testing.T) {
	r := newTestRegistry(t, Options{})
	if got := names(r.Host().List); len(got) != 1 || got[0] != "boot_aggregate" {
		t.Fatalf("host list = %q, want [boot_aggregate]", got)
	}
	algo, digest, err := r.Host().List.Entry(0).FileDigest()
	if err != nil {
		t.Fatal(err)
	}
	if algo != "sha256" || !bytes.Equal(digest, make([]byte, 32)) {
		t.Errorf("boot_aggregate digest = %s:%x, want sha256 zeros (no TPM)", algo, digest)
	}
}

func TestBootAggregateHook(t *testing.T) {
	want := bytes.Repeat([]byte{0xab}, 32)
	r := newTestRegistry(t, Options{BootAggregate: func(a measurelog.Algo) ([]byte, error) { return want, nil }})
	_, digest, err := r.Host().List.Entry(0).FileDigest()
	if err != nil || !bytes.Equal(digest, want) {
		t.Fatalf("boot_aggregate = %x, %v; want %x", digest, err, want)
	}
}

// TestBootAggregateIMATemplate: with the ima template in a sha256
// namespace, boot_aggregate's "d" is the SHA-1 aggregate, as
// ima_eventdigest_init computes it.
func TestBootAggregateIMATemplate(t *testing.T) {
	agg := map[measurelog.Algo][]byte{measurelog.SHA1: bytes.Repeat([]byte{0x11}, 20), measurelog.SHA256: bytes.Repeat([]byte{0x22}, 32)}
	r := newTestRegistry(t, Options{Template: measurelog.TemplateIMA, BootAggregate: func(a measurelog.Algo) ([]byte, error) { return agg[a], nil }})
	e := r.Host().List.Entry(0)
	algo, digest, err := e.FileDigest()
	if err != nil || e.Template != "ima" || algo != "sha1" || !bytes.Equal(digest, agg[measurelog.SHA1]) {
		t.Fatalf("boot_aggregate = %s %s:%x, %v; want ima sha1:%x", e.Template, algo, digest, err, agg[measurelog.SHA1])
	}
}

func TestAttach(t *testing.T) {
	needRoot(t)
	r := newTestRegistry(t, Options{})
	pid := harness.StartSleeper(t).Pid
	cfg := []byte(`{"ociVersion":"1.0.2","process":{"args":["sh"]}}`)
	ns, err := r.Attach("c1", pid, cfg)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if got := names(ns.List); strings.Join(got, ",") != "boot_aggregate,"+OCIConfigName {
		t.Fatalf("container list = %q", got)
	}
	e := ns.List.Entry(1)
	if e.Template != "ima-buf" || e.PCR != DefaultPCR {
		t.Errorf("oci entry template %s pcr %d", e.Template, e.PCR)
	}
	algo, digest, _ := e.FileDigest()
	sum := sha256.Sum256(cfg)
	if algo != "sha256" || !bytes.Equal(digest, sum[:]) {
		t.Errorf("oci digest %s:%x, want sha256:%x", algo, digest, sum)
	}
	if !bytes.Equal(e.Fields[2], cfg) {
		t.Errorf("ima-buf buf field = %q, want the config bytes", e.Fields[2])
	}
	// The host sees the container's entries too (boot_aggregate is a duplicate).
	if got := names(r.Host().List); strings.Join(got, ",") != "boot_aggregate,"+OCIConfigName {
		t.Errorf("host list = %q", got)
	}
	if got, ok := r.Get("c1"); !ok || got != ns {
		t.Errorf("Get(c1) = %v, %v", got, ok)
	}
	if got := r.Namespaces(); len(got) != 1 || got[0] != ns {
		t.Errorf("Namespaces = %v", got)
	}

	// ForCaller: the container's init belongs to it, we (host) to the host.
	c, err := r.Resolver().Caller(pid)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.ForCaller(c); err != nil || got != ns {
		t.Errorf("ForCaller(init) = %v, %v; want c1", got, err)
	}
	self, err := r.Resolver().Caller(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.ForCaller(self); err != nil || got != r.Host() {
		t.Errorf("ForCaller(self) = %v, %v; want host", got, err)
	}
}

func TestAttachErrors(t *testing.T) {
	needRoot(t)
	r := newTestRegistry(t, Options{})
	pid := harness.StartSleeper(t).Pid
	if _, err := r.Attach("c1", pid, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		id   string
		pid  int
		want error
	}{
		{"same id", "c1", pid, ErrExists},
		{"same pid ns", "c2", pid, ErrExists},
		{"host pid ns", "c3", os.Getpid(), ErrHostPidNS},
		{"bad id", "../x", pid, ErrInvalidID},
		{"host id", HostID, pid, ErrInvalidID},
		{"no pid", "c4", 0, ErrNotRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := r.Attach(tt.id, tt.pid, nil); !errors.Is(err, tt.want) {
				t.Errorf("Attach(%q, %d) = %v, want %v", tt.id, tt.pid, err, tt.want)
			}
		})
	}
	if len(r.Namespaces()) != 1 {
		t.Errorf("failed attaches changed the registry: %d namespaces", len(r.Namespaces()))
	}
}

type recorder struct {
	mu               sync.Mutex
	attached, detach []string
	detachedCh       chan string
}

func (o *recorder) Attached(ns *Namespace) {
	o.mu.Lock()
	o.attached = append(o.attached, ns.ID)
	o.mu.Unlock()
}

func (o *recorder) Detached(ns *Namespace) {
	o.mu.Lock()
	o.detach = append(o.detach, ns.ID)
	o.mu.Unlock()
	o.detachedCh <- ns.ID
}

func TestDetachAndAutoDetach(t *testing.T) {
	needRoot(t)
	r := newTestRegistry(t, Options{})
	obs := &recorder{detachedCh: make(chan string, 4)}
	r.AddObserver(obs)
	pid1 := harness.StartSleeper(t).Pid
	sleeper2 := harness.StartSleeper(t)
	pid2 := sleeper2.Pid
	ns1, err := r.Attach("one", pid1, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns2, err := r.Attach("two", pid2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Detach("one"); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if !ns1.IsDetached() {
		t.Error("ns1 not marked detached")
	}
	if err := r.Detach("one"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Detach = %v, want ErrNotFound", err)
	}
	if id := <-obs.detachedCh; id != "one" {
		t.Errorf("observer got %s", id)
	}
	// The container's init exits: detached without being asked.
	sleeper2.Stop()
	select {
	case id := <-obs.detachedCh:
		if id != "two" {
			t.Errorf("auto-detached %s, want two", id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("container two not detached after its init exited")
	}
	if _, ok := r.Get("two"); ok || !ns2.IsDetached() {
		t.Error("two still registered")
	}
	obs.mu.Lock()
	attaches := len(obs.attached)
	obs.mu.Unlock()
	if attaches != 2 {
		t.Errorf("observer saw %d attaches, want 2", attaches)
	}
	// The pid namespace of a detached container can be registered again.
	pid3 := harness.StartSleeper(t).Pid
	if _, err := r.Attach("one", pid3, nil); err != nil {
		t.Errorf("re-attach id one: %v", err)
	}
}

func mustParse(t *testing.T, text string) policy.Policy {
	t.Helper()
	rules, err := policy.Parse(text)
	if err != nil {
		t.Fatalf("parse %q: %v", text, err)
	}
	return rules
}

func TestLoadPolicy(t *testing.T) {
	def := mustParse(t, "measure func=BPRM_CHECK\n")
	ns := newNamespace("x", 1, &nsresolve.Pinned{}, measurelog.SHA256, "ima-ng", def, policy.Limits{})
	if got := ns.Policy().String(); got != def.String() {
		t.Fatalf("initial policy %q, want the default %q", got, def.String())
	}
	if err := ns.LoadPolicy(nil); !errors.Is(err, ErrEmptyPolicy) {
		t.Errorf("empty load = %v, want ErrEmptyPolicy", err)
	}
	first := mustParse(t, "measure func=FILE_CHECK mask=MAY_READ\n")
	if err := ns.LoadPolicy(first); err != nil {
		t.Fatal(err)
	}
	if got := ns.Policy().String(); got != first.String() {
		t.Errorf("after first load %q, want it to replace the default: %q", got, first.String())
	}
	second := mustParse(t, "measure func=MMAP_CHECK mask=MAY_EXEC\n")
	if err := ns.LoadPolicy(second); err != nil {
		t.Fatal(err)
	}
	if got, want := ns.Policy().String(), first.String()+second.String(); got != want {
		t.Errorf("after second load %q, want appended %q", got, want)
	}
	// The default given to the registry is not aliased by loads.
	if def.String() != "measure func=BPRM_CHECK \n" {
		t.Errorf("default policy changed: %q", def.String())
	}
}

func TestPolicyWriterClaim(t *testing.T) {
	ns := newNamespace("x", 1, &nsresolve.Pinned{}, measurelog.SHA256, "ima-ng", nil, policy.Limits{})
	if !ns.AcquirePolicyWriter() {
		t.Fatal("first claim refused")
	}
	if ns.AcquirePolicyWriter() {
		t.Fatal("second claim granted")
	}
	ns.ReleasePolicyWriter()
	if !ns.AcquirePolicyWriter() {
		t.Fatal("claim after release refused")
	}
}

// journalNames returns the names of the entries in the journal at path.
func journalNames(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := measurelog.DecodeBinary(data, measurelog.SHA1)
	if err != nil {
		t.Fatalf("journal %s: %v", path, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestMeasureFileAndRecord(t *testing.T) {
	needRoot(t)
	state := t.TempDir()
	r := newTestRegistry(t, Options{StateDir: state, DefaultContainerPolicy: mustParse(t, "measure func=FILE_CHECK\n")})
	pid := harness.StartSleeper(t).Pid
	ns, err := r.Attach("m", pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "data")
	content := []byte("hello imafs\n")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	ev, err := EventFor(f, policy.FileCheck, policy.MayRead, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	d, err := r.MeasureFile(ns, ev, f, "/data")
	if err != nil || d.Actions&policy.Measure == 0 {
		t.Fatalf("MeasureFile = %+v, %v", d, err)
	}
	last := ns.List.Entry(ns.List.Len() - 1)
	_, digest, _ := last.FileDigest()
	sum := sha256.Sum256(content)
	if last.Name() != "/data" || !bytes.Equal(digest, sum[:]) || last.Template != "ima-ng" {
		t.Errorf("entry %s %s %x, want ima-ng /data %x", last.Template, last.Name(), digest, sum)
	}
	if h := r.Host().List; h.Entry(h.Len()-1).Name() != "/data" {
		t.Error("host list lacks the container's measurement")
	}
	// Same file again: the kernel's duplicate rule keeps one entry.
	n := ns.List.Len()
	if _, err := r.MeasureFile(ns, ev, f, "/data"); err != nil {
		t.Fatal(err)
	}
	if ns.List.Len() != n {
		t.Errorf("duplicate measurement added: %d → %d entries", n, ns.List.Len())
	}
	// Not what the policy measures: nothing recorded.
	ev.Func = policy.BPRMCheck
	if d, err := r.MeasureFile(ns, ev, f, "/data"); err != nil || d.Actions&policy.Measure != 0 || ns.List.Len() != n {
		t.Errorf("BPRM_CHECK with a FILE_CHECK policy: %+v %v, %d entries", d, err, ns.List.Len())
	}
	// Journaled before Record returned; the duplicate is journaled too
	// (replay applies the same rule and drops it again).
	host := journalNames(t, filepath.Join(state, "host.journal"))
	if want := "boot_aggregate,boot_aggregate,/data,/data"; strings.Join(host, ",") != want {
		t.Errorf("host journal %q, want %q", host, want)
	}
	mj := journalNames(t, filepath.Join(state, "ns", "m", "list.journal"))
	if want := "boot_aggregate,/data,/data"; strings.Join(mj, ",") != want {
		t.Errorf("journal of m %q, want %q", mj, want)
	}
}

// TestMeasureFileTemplates: a measure rule of each template the policy
// accepts records one entry through MeasureFile, with what the kernel
// would put in its fields: the ima template's "d" holds the file's SHA-1
// (the namespace hashes in sha256), the signatures and EVM-protected
// attributes come from the file's xattrs, ima-buf's buffer stays empty.
func TestMeasureFileTemplates(t *testing.T) {
	needRoot(t)
	var rules strings.Builder
	for i, tmpl := range policy.Templates {
		rules.WriteString("measure func=FILE_CHECK fowner=" + strconv.Itoa(5000+i) + " template=" + tmpl.Name + "\n")
	}
	r := newTestRegistry(t, Options{DefaultContainerPolicy: mustParse(t, rules.String())})
	ns, err := r.Attach("tmpl", harness.StartSleeper(t).Pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	sig := []byte{0x03, 0x02, 0x04, 0xaa, 0xbb}
	evm := []byte{0x05, 0x02, 0x04, 0xcc}
	dir := t.TempDir()
	for i, tmpl := range policy.Templates {
		t.Run(tmpl.Name, func(t *testing.T) {
			path := filepath.Join(dir, tmpl.Name)
			content := []byte("file for " + tmpl.Name + "\n")
			if err := os.WriteFile(path, content, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(path, 5000+i, 77); err != nil {
				t.Fatal(err)
			}
			for name, v := range map[string][]byte{"security.ima": sig, "security.evm": evm} {
				if err := unix.Setxattr(path, name, v, 0); err != nil {
					t.Skipf("setxattr %s on %s: %v", name, dir, err)
				}
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ev, err := EventFor(f, policy.FileCheck, policy.MayRead, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			n := ns.List.Len()
			if _, err := r.MeasureFile(ns, ev, f, "/"+tmpl.Name); err != nil {
				t.Fatal(err)
			}
			if ns.List.Len() != n+1 {
				t.Fatalf("%d entries added, want 1", ns.List.Len()-n)
			}
			e := ns.List.Entry(n)
			s1, s256 := sha1.Sum(content), sha256.Sum256(content)
			m := measurelog.Measurement{
				FileDigest: s256[:], FileAlgo: measurelog.SHA256, DigestSHA1: s1[:], Name: "/" + tmpl.Name,
				Sig: sig, EVMSig: evm, Namespace: ns.Label(), UID: 5000 + uint32(i), GID: 77, Mode: 0o100640,
				Xattrs: []measurelog.Xattr{{Name: "security.ima", Value: sig}},
			}
			// The daemon records the kernel series' ima-nsreg as its own ima-ns.
			want, err := measurelog.NewEntry(ownTemplate(tmpl.Name), 10, m)
			if err != nil {
				t.Fatal(err)
			}
			if got, w := e.AppendASCII(nil, measurelog.SHA1), want.AppendASCII(nil, measurelog.SHA1); !bytes.Equal(got, w) {
				t.Errorf("entry\n got %s\nwant %s", got, w)
			}
			if tmpl.Name == measurelog.TemplateIMA {
				if algo, d, _ := e.FileDigest(); algo != "sha1" || !bytes.Equal(d, s1[:]) {
					t.Errorf("ima entry's digest %s:%x, want the file's sha1 %x", algo, d, s1)
				}
			}
		})
	}
}
