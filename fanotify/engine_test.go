package fanotify_test

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/measurelog"
)

// TestMeasureExec: executed binaries appear once per container with the
// sha256 that sha256sum computes, again after they change; another
// container's execs never appear in a list; the host list holds both.
func TestMeasureExec(t *testing.T) {
	e := newEnv(t, fanotify.Options{})
	c1 := e.container("c1", "busybox-tool")
	c2 := e.container("c2", "busybox-other")
	c1.setPolicy("measure func=BPRM_CHECK")
	c2.setPolicy("measure func=BPRM_CHECK")
	copyFile(t, "/proc/self/exe", filepath.Join(e.shared, "busybox-probe")) // replaced below by busybox
	bb, _ := exec.LookPath("busybox")
	copyFile(t, bb, filepath.Join(e.shared, "busybox-probe"))

	want1 := sha256sum(t, c1.path("/bin/busybox-tool"))
	for i := 0; i < 3; i++ {
		c1.mustExec("/bin/busybox-tool", "true")
	}
	got := named(c1.ns.List, "/bin/busybox-tool")
	if len(got) != 1 {
		t.Fatalf("c1: %d entries for /bin/tool after 3 execs, want 1", len(got))
	}
	if d := fileDigest(t, got[0]); d != want1 {
		t.Fatalf("c1 /bin/tool: digest %s, sha256sum %s", d, want1)
	}
	// The repeated execs were answered by the kernel from the ignore mark.
	if s := e.eng.Stats(); s.Ignored == 0 {
		t.Errorf("no ignore mark added: %+v", s)
	}
	before := e.eng.Stats().Events
	c1.mustExec("/bin/busybox-tool", "true")
	if after := e.eng.Stats().Events; after != before {
		t.Errorf("exec of a measured file reached the daemon (%d events, want %d): ignore mark not effective", after, before)
	}

	// Changed binary: measured again (the write cleared the ignore mark).
	appendTo(t, c1.path("/bin/busybox-tool"), "imafs-changed\n")
	want2 := sha256sum(t, c1.path("/bin/busybox-tool"))
	c1.mustExec("/bin/busybox-tool", "true")
	c1.mustExec("/bin/busybox-tool", "true")
	got = named(c1.ns.List, "/bin/busybox-tool")
	if len(got) != 2 {
		t.Fatalf("c1: %d entries for /bin/tool after change, want 2", len(got))
	}
	if d := fileDigest(t, got[1]); d != want2 {
		t.Fatalf("c1 changed /bin/tool: digest %s, sha256sum %s", d, want2)
	}

	// A shared file (same inode in both containers, mount marks): measured
	// in each container once; c1's ignore mark does not hide it from c2.
	wantShared := sha256sum(t, filepath.Join(e.shared, "busybox-probe"))
	c1.mustExec("/shared/busybox-probe", "true")
	c1.mustExec("/shared/busybox-probe", "true")
	c2.mustExec("/shared/busybox-probe", "true")
	c2.mustExec("/bin/busybox-other", "true")
	for _, c := range []*container{c1, c2} {
		got := named(c.ns.List, "/shared/busybox-probe")
		if len(got) != 1 || fileDigest(t, got[0]) != wantShared {
			t.Fatalf("%s: /shared/probe entries %d, want 1 with %s", c.id, len(got), wantShared)
		}
	}
	if n := len(named(c1.ns.List, "/bin/busybox-other")); n != 0 {
		t.Fatalf("c1's list has c2's /bin/other (%d entries)", n)
	}
	if n := len(named(c2.ns.List, "/bin/busybox-tool")); n != 0 {
		t.Fatalf("c2's list has c1's /bin/tool (%d entries)", n)
	}
	if n := len(named(c2.ns.List, "/bin/busybox-other")); n != 1 {
		t.Fatalf("c2: %d entries for /bin/other, want 1", n)
	}
	host := e.reg.Host().List
	if n := len(named(host, "/bin/busybox-tool")); n != 2 {
		t.Errorf("host: %d entries for /bin/tool, want 2", n)
	}
	if n := len(named(host, "/bin/busybox-other")); n != 1 {
		t.Errorf("host: %d entries for /bin/other, want 1", n)
	}
	// Same template data in c1 and c2 (ima-ng has no namespace field):
	// the host list keeps it once, as the kernel's duplicate rule says.
	if n := len(named(host, "/shared/busybox-probe")); n != 1 {
		t.Errorf("host: %d entries for /shared/probe, want 1", n)
	}
	// Nothing was measured for the host's own accesses (sha256sum above).
	for _, en := range entries(host) {
		if strings.HasPrefix(en.Name(), "/proc/") || strings.HasPrefix(en.Name(), e.dir) {
			t.Errorf("host list has a host access: %s", en.Name())
		}
	}
}

// TestMeasureUnmeasuredContainer: a container without a measure rule gets
// no entries (but boot_aggregate).
func TestMeasureNoPolicy(t *testing.T) {
	e := newEnv(t, fanotify.Options{})
	c := e.container("quiet", "busybox-tool")
	n := c.ns.List.Len()
	c.mustExec("/bin/busybox-tool", "true")
	if c.ns.List.Len() != n {
		t.Fatalf("list grew from %d to %d without a policy", n, c.ns.List.Len())
	}
}

// TestAppraise: a binary hashed with evmctl ima_hash runs, a tampered one
// and one without security.ima are denied with EPERM; with
// appraise_type=imasig, a binary signed by the container's key runs and
// one signed by another key (or only hashed) is denied.
func TestAppraise(t *testing.T) {
	for _, tool := range []string{"evmctl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	var mu sync.Mutex
	denials := map[string]bool{} // "namespace reason"
	e := newEnv(t, fanotify.Options{OnAnswer: func(a fanotify.Answer) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case a.Allow && a.Reason != "":
			t.Errorf("allowed with reason %q", a.Reason)
		case a.Latency <= 0:
			t.Errorf("answer with latency %v", a.Latency)
		case !a.Allow:
			denials[a.Namespace+" "+a.Reason] = true
		}
	}})
	ch := e.container("hashed", "busybox-good", "busybox-tampered", "busybox-bare")
	cs := e.container("signed", "busybox-mine", "busybox-theirs", "busybox-hashonly")
	keydir := filepath.Join(e.keys, "signed")
	if err := os.MkdirAll(keydir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", filepath.Join(e.dir, "mine.key"),
		"-out", filepath.Join(keydir, "mine.crt"), "-days", "2", "-subj", "/CN=imafs container key")
	run(t, "openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", filepath.Join(e.dir, "theirs.key"))

	run(t, "evmctl", "ima_hash", ch.path("/bin/busybox-good"))
	run(t, "evmctl", "ima_hash", ch.path("/bin/busybox-tampered"))
	appendTo(t, ch.path("/bin/busybox-tampered"), "tampered\n")
	run(t, "evmctl", "ima_sign", "--key", filepath.Join(e.dir, "mine.key"), cs.path("/bin/busybox-mine"))
	run(t, "evmctl", "ima_sign", "--key", filepath.Join(e.dir, "theirs.key"), cs.path("/bin/busybox-theirs"))
	run(t, "evmctl", "ima_hash", cs.path("/bin/busybox-hashonly"))

	ch.setPolicy("appraise func=BPRM_CHECK\nmeasure func=BPRM_CHECK")
	cs.setPolicy("appraise func=BPRM_CHECK appraise_type=imasig\nmeasure func=BPRM_CHECK template=ima-sig")

	for _, tc := range []struct {
		c     *container
		bin   string
		allow bool
	}{
		{ch, "/bin/busybox-good", true},
		{ch, "/bin/busybox-tampered", false},
		{ch, "/bin/busybox-bare", false},
		{cs, "/bin/busybox-mine", true},
		{cs, "/bin/busybox-theirs", false},
		{cs, "/bin/busybox-hashonly", false},
		{ch, "/bin/busybox-good", true},      // cached: still allowed
		{ch, "/bin/busybox-tampered", false}, // cached: still denied
	} {
		out, err := tc.c.exec(tc.bin, "true")
		if tc.allow && err != nil {
			t.Errorf("%s %s: denied: %v\n%s", tc.c.id, tc.bin, err, out)
		}
		if !tc.allow {
			if err == nil {
				t.Errorf("%s %s: ran, want EPERM", tc.c.id, tc.bin)
			} else if !strings.Contains(out, "Operation not permitted") {
				t.Errorf("%s %s: failed but not with EPERM: %v\n%s", tc.c.id, tc.bin, err, out)
			}
		}
	}
	// Every denial reached OnAnswer with the kernel's audit cause.
	mu.Lock()
	want := map[string]bool{
		ch.ns.ID + " invalid-hash":           true,
		ch.ns.ID + " missing-hash":           true,
		cs.ns.ID + " missing-key":            true,
		cs.ns.ID + " IMA-signature-required": true,
	}
	if !maps.Equal(denials, want) {
		t.Errorf("denials seen by OnAnswer: %v, want %v", denials, want)
	}
	mu.Unlock()
	if s := e.eng.Stats(); s.Pending != 0 || s.Denied < uint64(len(want)) {
		t.Errorf("stats after every exec returned: %+v, want nothing pending and at least %d denials", s, len(want))
	}
	// The signed binary is in the list with its signature (ima-sig).
	got := named(cs.ns.List, "/bin/busybox-mine")
	if len(got) != 1 {
		t.Fatalf("signed: %d entries for /bin/mine", len(got))
	}
	if got[0].Template != "ima-sig" || len(got[0].Fields) != 3 || len(got[0].Fields[2]) == 0 || got[0].Fields[2][0] != 0x03 {
		t.Fatalf("signed /bin/mine: template %s, fields %d, want ima-sig with a signature", got[0].Template, len(got[0].Fields))
	}
	// Fixing the file (re-hashing it: setxattr changes its ctime) lets it
	// run: the cached denial belongs to the old version.
	run(t, "evmctl", "ima_hash", ch.path("/bin/busybox-tampered"))
	if out, err := ch.exec("/bin/busybox-tampered", "true"); err != nil {
		t.Errorf("re-hashed /bin/busybox-tampered: %v\n%s", err, out)
	}
}

// TestEvmctlVerifiesList: evmctl ima_measurement verifies a container's
// binary list against the PCRs of our replay.
func TestEvmctlVerifiesList(t *testing.T) {
	if _, err := exec.LookPath("evmctl"); err != nil {
		t.Skip("needs evmctl")
	}
	e := newEnv(t, fanotify.Options{})
	c := e.container("verified", "busybox-a", "busybox-b")
	c.setPolicy("measure func=BPRM_CHECK")
	c.mustExec("/bin/busybox-a", "true")
	c.mustExec("/bin/busybox-b", "true")
	c.mustExec("/bin/sh", "-c", "/bin/busybox-a true")
	if len(named(c.ns.List, "/bin/busybox-a")) != 1 || len(named(c.ns.List, "/bin/busybox-b")) != 1 {
		t.Fatalf("list: %d entries", c.ns.List.Len())
	}
	dir := t.TempDir()
	list := filepath.Join(dir, "binary_runtime_measurements")
	size := c.ns.List.Size(measurelog.Binary, measurelog.SHA1)
	buf := make([]byte, size)
	if _, err := c.ns.List.ReadAt(buf, 0, measurelog.Binary, measurelog.SHA1); err != nil && int64(len(buf)) != size {
		t.Fatal(err)
	}
	if err := os.WriteFile(list, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"ima_measurement"}
	for _, bank := range []measurelog.Algo{measurelog.SHA1, measurelog.SHA256} {
		var b strings.Builder
		for i := 0; i < 24; i++ {
			fmt.Fprintf(&b, "PCR-%02d: %x\n", i, c.ns.List.PCR(bank, i))
		}
		p := filepath.Join(dir, "pcrs-"+bank.String())
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--pcrs", bank.String()+","+p)
	}
	out, err := exec.Command("evmctl", append(args, list)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Matched per TPM bank") {
		t.Fatalf("evmctl %v: %v\n%s", args, err, out)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// TestChildNamespaces: a task in a child mount namespace (`unshare -m`
// copies the container's mounts: the filesystem mark still covers them) and
// in an unregistered child pid namespace still measures into its container.
func TestChildNamespaces(t *testing.T) {
	e := newEnv(t, fanotify.Options{})
	c := e.container("nested", "busybox-inner", "unshare")
	c.setPolicy("measure func=BPRM_CHECK")
	c.mustExec("/bin/unshare", "-m", "-p", "-f", "/bin/busybox-inner", "true")
	if n := len(named(c.ns.List, "/bin/busybox-inner")); n != 1 {
		t.Fatalf("exec in child mount+pid namespaces: %d entries, want 1", n)
	}
}

// TestKeyRevocation: removing a key from the container's key directory
// stops binaries signed with it, even those already appraised (ignore
// marks and cached results are flushed).
func TestKeyRevocation(t *testing.T) {
	for _, tool := range []string{"evmctl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	e := newEnv(t, fanotify.Options{})
	c := e.container("revoking", "busybox-signed")
	keydir := filepath.Join(e.keys, "revoking")
	if err := os.MkdirAll(keydir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", filepath.Join(e.dir, "k.key"),
		"-out", filepath.Join(keydir, "k.crt"), "-days", "2", "-subj", "/CN=imafs revocation test")
	run(t, "evmctl", "ima_sign", "--key", filepath.Join(e.dir, "k.key"), c.path("/bin/busybox-signed"))
	c.setPolicy("appraise func=BPRM_CHECK appraise_type=imasig")
	c.mustExec("/bin/busybox-signed", "true")
	c.mustExec("/bin/busybox-signed", "true")
	if err := os.Remove(filepath.Join(keydir, "k.crt")); err != nil {
		t.Fatal(err)
	}
	if err := e.eng.Sync(c.ns); err != nil {
		t.Fatal(err)
	}
	if out, err := c.exec("/bin/busybox-signed", "true"); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("after the key was removed: %v %q, want EPERM", err, out)
	}
}

// TestExt4Root: the same measurement and appraisal on an ext4 file system
// (loop image the test made, mounted in the container's own namespace:
// a filesystem mark), with security.ima in ext4 xattrs.
func TestExt4Root(t *testing.T) {
	if _, err := exec.LookPath("evmctl"); err != nil {
		t.Skip("needs evmctl")
	}
	e := newEnv(t, fanotify.Options{})
	c := e.containerOn("ext4root", "ext4", "busybox-good", "busybox-bad")
	run(t, "evmctl", "ima_hash", c.path("/bin/busybox-good"))
	run(t, "evmctl", "ima_hash", c.path("/bin/busybox-bad"))
	appendTo(t, c.path("/bin/busybox-bad"), "tampered\n")
	c.setPolicy("appraise func=BPRM_CHECK fowner=0\nmeasure func=BPRM_CHECK")
	want := sha256sum(t, c.path("/bin/busybox-good"))
	c.mustExec("/bin/busybox-good", "true")
	c.mustExec("/bin/busybox-good", "true")
	if got := named(c.ns.List, "/bin/busybox-good"); len(got) != 1 || fileDigest(t, got[0]) != want {
		t.Fatalf("/bin/busybox-good: %d entries, want 1 with %s", len(got), want)
	}
	if out, err := c.exec("/bin/busybox-bad", "true"); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("tampered binary on ext4: %v %q, want EPERM", err, out)
	}
	// A change on ext4 clears the ignore mark too: measured again, and the
	// stale security.ima now denies it.
	appendTo(t, c.path("/bin/busybox-good"), "changed\n")
	if out, err := c.exec("/bin/busybox-good", "true"); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("changed binary on ext4: %v %q, want EPERM", err, out)
	}
	if n := len(named(c.ns.List, "/bin/busybox-good")); n != 2 {
		t.Fatalf("/bin/busybox-good after the change: %d entries, want 2", n)
	}
}
