package fs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

func needRoot(t *testing.T) {
	t.Helper()
	harness.RequireRoot(t)
	harness.RequireTools(t, "unshare", "nsenter", "setpriv", "sh", "cat")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

type fixture struct {
	reg  *imans.Registry
	root *Root
	dir  string // mount point
	ima  string // dir/ima
}

func mount(t *testing.T, opts imans.Options) *fixture {
	t.Helper()
	return mountFor(t, opts, nil)
}

// mountFor mounts a tree for owner (nil: a host mount); owner is called
// with the new registry.
func mountFor(t *testing.T, opts imans.Options, owner func(*imans.Registry) *imans.Namespace) *fixture {
	t.Helper()
	return mountWith(t, opts, Options{}, owner)
}

// mountWith is mountFor with the tree's options (Registry, Log and Owner
// are set here).
func mountWith(t *testing.T, opts imans.Options, fsOpts Options, owner func(*imans.Registry) *imans.Namespace) *fixture {
	t.Helper()
	needRoot(t)
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	opts.Log = log
	reg, err := imans.NewRegistry(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	dir := harness.TempDir(t) // non-root callers must reach the mount point
	var own *imans.Namespace
	if owner != nil {
		own = owner(reg)
	}
	fsOpts.Registry, fsOpts.Log, fsOpts.Owner = reg, log, own
	root := NewRoot(fsOpts)
	srv, err := Mount(dir, root)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return &fixture{reg: reg, root: root, dir: dir, ima: filepath.Join(dir, "ima")}
}

// run runs argv (optionally inside the namespaces of pid) and returns
// stdout and the error.
func run(t *testing.T, pid int, argv ...string) (string, error) {
	t.Helper()
	if pid != 0 {
		enter := []string{"nsenter", "--target", strconv.Itoa(pid), "--pid"}
		if !sameUserNS(pid) {
			enter = append(enter, "--user")
		}
		argv = append(append(enter, "--"), argv...)
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		return out.String(), errors.New(strings.TrimSpace(stderr.String()) + ": " + err.Error())
	}
	return out.String(), nil
}

func sameUserNS(pid int) bool {
	a, _ := os.Readlink("/proc/self/ns/user")
	b, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/user")
	return a == b
}

func render(l *measurelog.List, f measurelog.Format, bank measurelog.Algo) string {
	buf := make([]byte, l.Size(f, bank))
	n, _ := l.ReadAt(buf, 0, f, bank)
	return string(buf[:n])
}

func TestTreeLayout(t *testing.T) {
	fx := mount(t, imans.Options{})
	type want struct {
		mode   os.FileMode
		target string
	}
	tests := map[string]want{
		"ima":                  {os.ModeSymlink | 0o444, "integrity/ima"},
		"integrity":            {os.ModeDir | 0o755, ""},
		"integrity/ima":        {os.ModeDir | 0o755, ""},
		"integrity/ima/policy": {0o600, ""},
		"integrity/ima/ascii_runtime_measurements":         {os.ModeSymlink | 0o444, "ascii_runtime_measurements_sha1"},
		"integrity/ima/binary_runtime_measurements":        {os.ModeSymlink | 0o444, "binary_runtime_measurements_sha1"},
		"integrity/ima/ascii_runtime_measurements_sha1":    {0o440, ""},
		"integrity/ima/ascii_runtime_measurements_sha256":  {0o440, ""},
		"integrity/ima/binary_runtime_measurements_sha1":   {0o440, ""},
		"integrity/ima/binary_runtime_measurements_sha256": {0o440, ""},
		"integrity/ima/runtime_measurements_count":         {0o440, ""},
		"integrity/ima/violations":                         {0o440, ""},
		"integrity/ima/quote":                              {0o600, ""},
	}
	for name, w := range tests {
		st, err := os.Lstat(filepath.Join(fx.dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if st.Mode() != w.mode {
			t.Errorf("%s: mode %v, want %v", name, st.Mode(), w.mode)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if sys.Uid != 0 || sys.Gid != 0 {
			t.Errorf("%s: owner %d:%d, want 0:0", name, sys.Uid, sys.Gid)
		}
		if st.Mode().IsRegular() && name != "integrity/ima/policy" && st.Size() == 0 {
			t.Errorf("%s: size 0: sendfile would read it as empty", name)
		}
		if w.target != "" {
			if got, _ := os.Readlink(filepath.Join(fx.dir, name)); got != w.target {
				t.Errorf("%s -> %q, want %q", name, got, w.target)
			}
		}
	}
	ents, err := os.ReadDir(filepath.Join(fx.dir, "integrity/ima"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 10 {
		t.Errorf("integrity/ima has %d entries, want 10", len(ents))
	}
}

func TestHostViewReadsHostList(t *testing.T) {
	fx := mount(t, imans.Options{})
	host := fx.reg.Host().List
	files := []struct {
		name   string
		format measurelog.Format
		bank   measurelog.Algo
	}{
		{"ascii_runtime_measurements", measurelog.ASCII, measurelog.SHA1},
		{"ascii_runtime_measurements_sha256", measurelog.ASCII, measurelog.SHA256},
		{"binary_runtime_measurements", measurelog.Binary, measurelog.SHA1},
		{"binary_runtime_measurements_sha256", measurelog.Binary, measurelog.SHA256},
	}
	for _, f := range files {
		got, err := run(t, 0, "cat", filepath.Join(fx.ima, f.name))
		if err != nil {
			t.Fatalf("cat %s: %v", f.name, err)
		}
		if want := render(host, f.format, f.bank); got != want || want == "" {
			t.Errorf("%s: got %q, want %q", f.name, got, want)
		}
	}
	if got, _ := run(t, 0, "cat", filepath.Join(fx.ima, "runtime_measurements_count")); got != "1\n" {
		t.Errorf("count %q, want \"1\\n\"", got)
	}
	if got, _ := run(t, 0, "cat", filepath.Join(fx.ima, "violations")); got != "0\n" {
		t.Errorf("violations %q, want \"0\\n\"", got)
	}
	// sendfile(2) (busybox cat) and its fallback to read(2).
	if bb, err := exec.LookPath("busybox"); err == nil {
		got, err := run(t, 0, bb, "cat", filepath.Join(fx.ima, "ascii_runtime_measurements"))
		if want := render(host, measurelog.ASCII, measurelog.SHA1); err != nil || got != want {
			t.Errorf("busybox cat: %q, %v; want %q", got, err, want)
		}
		if got, err := run(t, 0, bb, "cat", filepath.Join(fx.ima, "runtime_measurements_count")); err != nil || got != "1\n" {
			t.Errorf("busybox cat count: %q, %v", got, err)
		}
	}
	// stat reports the caller's own size.
	if st, err := os.Stat(filepath.Join(fx.ima, "ascii_runtime_measurements_sha256")); err != nil || st.Size() != host.Size(measurelog.ASCII, measurelog.SHA256) {
		t.Errorf("stat size %v, %v; want %d", st.Size(), err, host.Size(measurelog.ASCII, measurelog.SHA256))
	}
	// Offsets: a reader at byte X sees the same bytes (dd skip).
	full := render(host, measurelog.ASCII, measurelog.SHA1)
	got, err := run(t, 0, "dd", "if="+filepath.Join(fx.ima, "ascii_runtime_measurements"), "bs=1", "skip=10", "status=none")
	if err != nil || got != full[10:] {
		t.Errorf("read at offset 10: %q, %v; want %q", got, err, full[10:])
	}
}

func TestContainerSeesOwnList(t *testing.T) {
	fx := mount(t, imans.Options{})
	pidA, pidB := harness.StartSleeper(t).Pid, harness.StartSleeper(t).Pid
	a, err := fx.reg.Attach("a", pidA, []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := fx.reg.Attach("b", pidB, []byte(`{"b":2}`))
	if err != nil {
		t.Fatal(err)
	}
	ascii := filepath.Join(fx.ima, "ascii_runtime_measurements")
	for _, c := range []struct {
		pid int
		ns  *imans.Namespace
	}{{pidA, a}, {pidB, b}} {
		got, err := run(t, c.pid, "cat", ascii)
		if err != nil {
			t.Fatalf("cat in %s: %v", c.ns.ID, err)
		}
		if want := render(c.ns.List, measurelog.ASCII, measurelog.SHA1); got != want {
			t.Errorf("%s sees %q, want its own %q", c.ns.ID, got, want)
		}
		if n, _ := run(t, c.pid, "cat", filepath.Join(fx.ima, "runtime_measurements_count")); n != "2\n" {
			t.Errorf("%s count %q, want 2", c.ns.ID, n)
		}
	}
	// The host sees all: boot_aggregate + two oci-config entries.
	if n, _ := run(t, 0, "cat", filepath.Join(fx.ima, "runtime_measurements_count")); n != "3\n" {
		t.Errorf("host count %q, want 3", n)
	}
	// A child pid namespace inside a container (unregistered) still sees the container's view.
	got, err := run(t, pidA, "unshare", "--pid", "--fork", "cat", ascii)
	if err != nil || got != render(a.List, measurelog.ASCII, measurelog.SHA1) {
		t.Errorf("nested unregistered pid ns in a: %q, %v", got, err)
	}
}

func TestPrivilege(t *testing.T) {
	fx := mount(t, imans.Options{})
	ascii := filepath.Join(fx.ima, "ascii_runtime_measurements")
	// A non-root host user: EACCES.
	if _, err := run(t, 0, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "cat", ascii); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("non-root host read: %v, want Permission denied", err)
	}
	// Root without CAP_SYS_ADMIN reads by the kernel's rule (TestListReadRule).
	if _, err := run(t, 0, "setpriv", "--inh-caps", "-sys_admin", "--bounding-set", "-sys_admin", "cat", ascii); err != nil {
		t.Errorf("root without CAP_SYS_ADMIN: %v, want the list", err)
	}
	// A non-root user in a container gets EACCES for its own view too.
	pid := harness.StartSleeper(t).Pid
	if _, err := fx.reg.Attach("c", pid, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, pid, "setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "cat", ascii); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("container non-root: %v, want Permission denied", err)
	}
	if _, err := run(t, pid, "cat", ascii); err != nil {
		t.Errorf("container root: %v", err)
	}
}

func TestPolicyFile(t *testing.T) {
	fx := mount(t, imans.Options{})
	pol := filepath.Join(fx.ima, "policy")
	host := fx.reg.Host()

	// Shell redirection (O_TRUNC → SETATTR, dup'd fd, async RELEASE): the
	// rule must be readable right after the shell's close.
	if _, err := run(t, 0, "sh", "-c", "echo 'measure func=BPRM_CHECK' > "+pol+" && cat "+pol); err != nil {
		t.Fatalf("echo > policy: %v", err)
	}
	got, err := run(t, 0, "cat", pol)
	if err != nil || got != "measure func=BPRM_CHECK \n" {
		t.Fatalf("read-back %q, %v", got, err)
	}
	// A second load appends; a bad rule fails the session and changes nothing.
	if _, err := run(t, 0, "sh", "-c", "printf 'measure func=FILE_CHECK mask=MAY_READ\\n' > "+pol); err != nil {
		t.Fatal(err)
	}
	before := settled(host).String()
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("measure func=MMAP_CHECK\nmeasure func=BOGUS\n"), 0o644)
	_, err = run(t, 0, "sh", "-c", "cat "+bad+" > "+pol)
	if err == nil || !strings.Contains(err.Error(), "Invalid argument") {
		t.Errorf("bad rule: %v, want Invalid argument", err)
	}
	if after := settled(host).String(); after != before || strings.Count(after, "\n") != 2 {
		t.Errorf("policy after a bad session %q, want unchanged %q", after, before)
	}
	// Back-to-back writers: no EBUSY from a pending RELEASE.
	for i := 0; i < 20; i++ {
		if _, err := run(t, 0, "sh", "-c", "echo 'measure func=CREDS_CHECK' > "+pol); err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if n := len(settled(host)); n != 22 {
		t.Errorf("%d rules after 22 good loads, want 22", n)
	}

	// O_RDWR: EACCES. A second writer: EBUSY. A write at an offset: EINVAL.
	if f, err := os.OpenFile(pol, os.O_RDWR, 0); !errors.Is(err, syscall.EACCES) {
		t.Errorf("O_RDWR open: %v, want EACCES", err)
		if f != nil {
			f.Close()
		}
	}
	w1, err := os.OpenFile(pol, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.OpenFile(pol, os.O_WRONLY, 0); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("second writer: %v, want EBUSY", err)
	}
	if r, err := os.Open(pol); err != nil {
		t.Errorf("reader while a writer is open: %v", err)
	} else {
		r.Close()
	}
	if _, err := w1.WriteAt([]byte("measure func=BPRM_CHECK\n"), 5); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("pwrite at 5: %v, want EINVAL", err)
	}
	w1.Close()
	if n := len(settled(host)); n != 22 {
		t.Errorf("failed session changed the policy: %d rules", n)
	}
	// Without a trailing newline (count+1 in the kernel; capped for FUSE).
	w2, err := os.OpenFile(pol, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := w2.Write([]byte("measure func=MODULE_CHECK")); err != nil || n != 25 {
		t.Errorf("write without newline: %d, %v", n, err)
	}
	w2.Close()
	if p := settled(host); p[len(p)-1].String() != "measure func=MODULE_CHECK " {
		t.Errorf("last rule %q", p[len(p)-1].String())
	}
	// Non-root: EACCES for reading and writing.
	if _, err := run(t, 0, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "sh", "-c", "echo 'measure func=BPRM_CHECK' > "+pol); err == nil {
		t.Error("non-root wrote the policy")
	}
}

func TestPolicyPerNamespace(t *testing.T) {
	fx := mount(t, imans.Options{DefaultContainerPolicy: mustParse(t, "measure func=BPRM_CHECK\n")})
	pid := harness.StartSleeper(t).Pid
	ns, err := fx.reg.Attach("p", pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(fx.ima, "policy")
	if got, err := run(t, pid, "cat", pol); err != nil || got != "measure func=BPRM_CHECK \n" {
		t.Errorf("container default policy %q, %v", got, err)
	}
	if _, err := run(t, pid, "sh", "-c", "echo 'measure func=FILE_CHECK' > "+pol); err != nil {
		t.Fatal(err)
	}
	if got := settled(ns).String(); got != "measure func=FILE_CHECK \n" {
		t.Errorf("container policy %q: the first load replaces the default", got)
	}
	if got := settled(fx.reg.Host()).String(); got != "" {
		t.Errorf("host policy changed by the container: %q", got)
	}
	// The container's writer claim does not block the host's.
	w, err := os.OpenFile(pol, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := run(t, pid, "sh", "-c", "echo 'measure func=MMAP_CHECK' > "+pol); err != nil {
		t.Errorf("container writer while the host writes: %v", err)
	}
}

func mustParse(t *testing.T, text string) policy.Policy {
	t.Helper()
	p, err := policy.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestManyCallersRightView: many short-lived readers across containers, no
// answer from the wrong namespace.
func TestManyCallersRightView(t *testing.T) {
	fx := mount(t, imans.Options{})
	type ctr struct {
		pid  int
		want string
	}
	var ctrs []ctr
	for i := 0; i < 3; i++ {
		pid := harness.StartSleeper(t).Pid
		ns, err := fx.reg.Attach("race"+strconv.Itoa(i), pid, []byte("config "+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		ctrs = append(ctrs, ctr{pid, render(ns.List, measurelog.ASCII, measurelog.SHA1)})
	}
	ascii := filepath.Join(fx.ima, "ascii_runtime_measurements")
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrong := 0
	for i := 0; i < 60; i++ {
		wg.Add(1)
		go func(c ctr) {
			defer wg.Done()
			got, err := run(t, c.pid, "cat", ascii)
			if err != nil || got != c.want {
				mu.Lock()
				wrong++
				mu.Unlock()
				t.Errorf("wrong view: %q, %v", got, err)
			}
		}(ctrs[i%len(ctrs)])
	}
	wg.Wait()
	if wrong != 0 {
		t.Errorf("%d wrong answers", wrong)
	}
}

func TestPolicyMultiLineWrite(t *testing.T) {
	fx := mount(t, imans.Options{})
	pol := filepath.Join(fx.ima, "policy")
	w, err := os.OpenFile(pol, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	data := []byte("measure func=MMAP_CHECK\nmeasure func=BOGUS\n")
	n, err := syscall.Write(int(w.Fd()), data)
	if n != 24 || err != nil {
		t.Fatalf("first write = %d, %v; want 24 (one line, like the kernel)", n, err)
	}
	n, err = syscall.Write(int(w.Fd()), data[24:])
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("second write = %d, %v; want EINVAL", n, err)
	}
}

func TestPolicySessionsLikeTheKernel(t *testing.T) {
	fx := mount(t, imans.Options{})
	pol := filepath.Join(fx.ima, "policy")
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	polfile := write("policyfile", "measure func=KEXEC_KERNEL_CHECK\n# comment in a policy file\nmeasure func=KEXEC_INITRAMFS_CHECK\n")
	tests := []struct {
		name    string
		input   string
		wantErr string // substring of cat's error, "" for success
		want    string // policy after
	}{
		{"comment only", "# a comment-only session\n", "", ""},
		{"crlf", "measure func=BPRM_CHECK\r\n", "Invalid argument", ""},
		{"three lines", "measure func=CREDS_CHECK\n# middle comment\n\nmeasure func=FILE_CHECK mask=MAY_READ uid=0\n", "",
			"measure func=CREDS_CHECK \nmeasure func=FILE_CHECK mask=MAY_READ uid=0 \n"},
		{"load by path", polfile + "\n", "",
			"measure func=CREDS_CHECK \nmeasure func=FILE_CHECK mask=MAY_READ uid=0 \nmeasure func=KEXEC_KERNEL_CHECK \nmeasure func=KEXEC_INITRAMFS_CHECK \n"},
		{"missing path", "/nonexistent/policy\n", "No such file", ""},
	}
	want := ""
	for _, tt := range tests {
		in := write(strings.ReplaceAll(tt.name, " ", "-"), tt.input)
		_, err := run(t, 0, "sh", "-c", "cat "+in+" > "+pol)
		if tt.wantErr == "" && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.wantErr)
		}
		if tt.want != "" {
			want = tt.want
		}
		if got := settled(fx.reg.Host()).String(); got != want {
			t.Errorf("%s: policy %q, want %q", tt.name, got, want)
		}
	}
}

// TestContainerMountRefusesStrayCallers: on a container's mount, a caller
// that resolves to the host without being a host process (a detached
// container's process with an fd still open) gets EACCES, not the host view.
func TestContainerMountRefusesStrayCallers(t *testing.T) {
	var pid int
	fx := mountFor(t, imans.Options{}, func(reg *imans.Registry) *imans.Namespace {
		pid = harness.StartSleeper(t).Pid
		ns, err := reg.Attach("owner", pid, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ns
	})
	ascii := filepath.Join(fx.ima, "ascii_runtime_measurements")
	if _, err := run(t, pid, "cat", ascii); err != nil {
		t.Fatalf("owner container: %v", err)
	}
	if got, err := run(t, 0, "cat", ascii); err != nil || got != render(fx.reg.Host().List, measurelog.ASCII, measurelog.SHA1) {
		t.Errorf("host process on a container mount: %q, %v; want the host view", got, err)
	}
	if err := fx.reg.Detach("owner"); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, pid, "cat", ascii); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("detached container's caller: %v, want Permission denied", err)
	}
}

// TestOpenHandles: the tree counts what is open, so a daemon handing over
// can wait for its readers.
func TestOpenHandles(t *testing.T) {
	f := mount(t, imans.Options{})
	waitHandles := func(want int64) {
		t.Helper()
		// RELEASE is asynchronous in FUSE: close(2) returns before it.
		for deadline := time.Now().Add(10 * time.Second); f.root.OpenHandles() != want; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("OpenHandles = %d, want %d", f.root.OpenHandles(), want)
			}
		}
	}
	waitHandles(0)
	list, err := os.Open(filepath.Join(f.ima, "ascii_runtime_measurements"))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(f.ima)
	if err != nil {
		t.Fatal(err)
	}
	waitHandles(2)
	list.Close()
	waitHandles(1)
	dir.Close()
	waitHandles(0)
}
