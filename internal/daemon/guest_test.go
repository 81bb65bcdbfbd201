package daemon

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/appraise"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/mmapsrc"
	"github.com/imafs/imafs/policy"
)

// TestGuestDaemonAppraise is the daemon-level proof of `appraise
// func=MMAP_CHECK` with the BPF LSM mechanism. It runs in the QEMU guest of
// kernel-patches/test/run-bpf (a stock kernel with CONFIG_BPF_LSM and
// fanotify permission events; IMAFS_DAEMON_GUEST=1, the test binary built
// static) and prints "KTEST PASS|FAIL" lines; elsewhere it skips. The
// daemon's components run for real: registry, fanotify engine, mmap source
// (BPF LSM). Containers are this binary re-executed in new pid and mount
// namespaces (TestGuestDaemonWorkload), each with a tmpfs of its own.
const (
	daemonGuestEnv    = "IMAFS_DAEMON_GUEST"
	daemonWorkloadEnv = "IMAFS_DAEMON_WORKLOAD"
)

// gktest prints a verdict line for the harness and fails t on FAIL.
func gktest(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if ok {
		fmt.Printf("KTEST PASS daemon: %s\n", msg)
		return
	}
	fmt.Printf("KTEST FAIL daemon: %s\n", msg)
	t.Error(msg)
}

// TestGuestDaemonWorkload is the container's process when re-executed
// (IMAFS_DAEMON_WORKLOAD=1): it serves commands on stdin, one answer line
// each ("ok", "err ERRNO" or "err TEXT"). mount DIR: a tmpfs on DIR in its
// own mount namespace; open PATH: open and close; mmapx PATH: open, mmap
// PROT_READ|PROT_EXEC and keep it (as ld.so keeps a library), close; run
// PATH ARGS...: run a program and wait; more in serveWorkloadCmd.
func TestGuestDaemonWorkload(t *testing.T) {
	if os.Getenv(daemonWorkloadEnv) != "1" {
		t.Skip("the guest test's container process")
	}
	var kept [][]byte
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			os.Exit(0)
		}
		var err error
		switch f[0] {
		case "mount":
			if err = os.MkdirAll(f[1], 0o755); err == nil {
				err = unix.Mount("imafs-guest", f[1], "tmpfs", 0, "size=64m")
			}
		case "open":
			var fh *os.File
			if fh, err = os.Open(f[1]); err == nil {
				fh.Close()
			}
		case "mmapx":
			var fh *os.File
			if fh, err = os.Open(f[1]); err == nil {
				var b []byte
				if b, err = unix.Mmap(int(fh.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE); err == nil {
					kept = append(kept, b)
				}
				fh.Close()
			}
		case "run":
			err = exec.Command(f[1], f[2:]...).Run()
		default:
			if answer, ok := serveWorkloadCmd(f[0], strings.TrimPrefix(sc.Text(), f[0]+" ")); ok {
				fmt.Println(answer)
				continue
			}
			err = fmt.Errorf("unknown command %q", f[0])
		}
		var errno syscall.Errno
		switch {
		case err == nil:
			fmt.Println("ok")
		case errors.As(err, &errno):
			fmt.Printf("err %s\n", unix.ErrnoName(errno))
		default:
			fmt.Printf("err %v\n", err)
		}
	}
	os.Exit(0)
}

// guestContainer is a workload process in new pid and mount namespaces.
type guestContainer struct {
	*harness.Mapper
}

func startGuestContainer(t *testing.T) *guestContainer {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^TestGuestDaemonWorkload$")
	cmd.Env = append(os.Environ(), daemonWorkloadEnv+"=1")
	return &guestContainer{harness.StartWorkload(t, cmd)}
}

// do runs a command in the container and returns its answer.
func (c *guestContainer) do(t *testing.T, cmd string) string { return c.Ask(t, cmd) }

// file writes data into the container's tmpfs at dir/name (through
// /proc/PID/root) with security.ima xattr (nil: none) and returns the path
// the container sees.
func (c *guestContainer) file(t *testing.T, dir, name string, data, xattr []byte) string {
	t.Helper()
	host := fmt.Sprintf("/proc/%d/root%s/%s", c.Pid, dir, name)
	if err := os.WriteFile(host, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if xattr != nil {
		if err := unix.Setxattr(host, "security.ima", xattr, 0); err != nil {
			t.Fatalf("security.ima on %s: %v", host, err)
		}
	}
	return filepath.Join(dir, name)
}

// imaHash is a security.ima hash value (IMA_XATTR_DIGEST_NG, sha256).
func imaHash(data []byte) []byte {
	sum := sha256.Sum256(data)
	return append([]byte{0x04, 0x04}, sum[:]...)
}

func guestLib(name string) []byte {
	data := make([]byte, 8192)
	copy(data, fmt.Sprintf("\x7fELF daemon guest library %s %d\n", name, time.Now().UnixNano()))
	return data
}

// guestDaemon is the daemon's components as imafs serve wires them.
type guestDaemon struct {
	reg  *imans.Registry
	fan  *fanotifySource
	mm   *mmapSource
	hook *logtest.Hook
}

func startGuestDaemon(t *testing.T) *guestDaemon {
	t.Helper()
	log := logrus.New()
	log.SetLevel(logrus.DebugLevel)
	log.SetOutput(io.Discard)
	hook := logtest.NewLocal(log)
	reg, err := imans.NewRegistry(imans.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	restored := make(chan struct{})
	close(restored)
	env := &Env{Log: log, Reg: reg, Restored: restored}
	status := &sourceStatus{}
	fan := &fanotifySource{cfg: FanotifyConfig{Mode: "on", KeyDir: guestKeyDir}, kernel: &kernelSource{}, status: status}
	mm := &mmapSource{cfg: MmapConfig{Mode: "on"}, fan: fan, status: status}
	fan.mmap = mm
	if err := fan.Start(env); err != nil {
		t.Fatalf("fanotify engine: %v", err)
	}
	t.Cleanup(func() { fan.Stop(false) })
	if err := mm.Start(env); err != nil {
		t.Fatalf("mmap source: %v", err)
	}
	t.Cleanup(func() { mm.Stop(false) })
	return &guestDaemon{reg: reg, fan: fan, mm: mm, hook: hook}
}

// attach attaches c under id with policy text, and waits until its mount
// namespace is appraised (when the policy appraises) and the fanotify engine
// sees its opens of probe.
func (d *guestDaemon) attach(t *testing.T, id string, c *guestContainer, text, probe string) *imans.Namespace {
	t.Helper()
	ns, err := d.reg.Attach(id, c.Pid, nil)
	if err != nil {
		t.Fatalf("attach %s: %v", id, err)
	}
	rules, err := policy.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.LoadPolicy(rules); err != nil {
		t.Fatal(err)
	}
	want := appraisesMmap(rules)
	deadline := time.Now().Add(harness.DefaultTimeout)
	for {
		if !want && d.mm.watchOf(ns) != nil {
			return ns // the engine does not mark opens for this policy
		}
		before := d.fan.engine().Stats().Events
		got := c.do(t, "open "+probe)
		if got == "ok" && d.fan.engine().Stats().Events > before && d.mm.Enforces(ns) == want {
			return ns
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: engine not marking or mount ns not appraised after %v (open: %s, enforces %v)", id, harness.DefaultTimeout, got, d.mm.Enforces(ns))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// entry waits for ns's list to name path and returns its digests
// ("sha256:HEX"; "" for a violation), nil when none comes within wait.
func guestEntry(ns *imans.Namespace, path string, wait time.Duration) []string {
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		if got := entries(ns)[path]; len(got) > 0 || time.Now().After(deadline) {
			return got
		}
	}
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// refusedWith reports whether the log has a refused mapping of path in id
// with cause.
func (d *guestDaemon) refusedWith(id, path, cause string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, e := range d.hook.AllEntries() {
			if e.Message == "mmap source: appraisal failed, executable mapping refused (EACCES)" &&
				e.Data["id"] == id && e.Data["file"] == path && e.Data["cause"] == cause {
				return true
			}
		}
	}
	return false
}

func violations(ns *imans.Namespace, name string) int {
	n := 0
	for _, d := range entries(ns)[name] {
		if d == "" {
			n++
		}
	}
	return n
}

func TestGuestDaemonAppraise(t *testing.T) {
	if os.Getenv(daemonGuestEnv) != "1" {
		t.Skipf("runs in the BPF LSM kernel's QEMU guest (kernel-patches/test/run-bpf; %s=1)", daemonGuestEnv)
	}
	d := startGuestDaemon(t)
	mech := d.mm.src.Mechanism()
	gktest(t, mech == mmapsrc.MechanismLSM, "the mmap source runs the BPF LSM mechanism: %s", mech)
	if mech != mmapsrc.MechanismLSM {
		return
	}

	const dir1 = "/tmp/guest-c1"
	c1 := startGuestContainer(t)
	if got := c1.do(t, "mount "+dir1); got != "ok" {
		t.Fatalf("mount in c1: %s", got)
	}
	good, bad, none := guestLib("good"), guestLib("bad"), guestLib("none")
	pGood := c1.file(t, dir1, "good.so", good, imaHash(good))
	pBad := c1.file(t, dir1, "bad.so", bad, imaHash([]byte("other content")))
	pNone := c1.file(t, dir1, "none.so", none, nil)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	bbBad := append(append([]byte(nil), bb...), "not the signed binary"...)
	// busybox copies named after the applet they run
	pBBGood := c1.file(t, dir1, "true", bb, imaHash(bb))
	pBBBad := c1.file(t, dir1, "echo", bbBad, nil)
	probe1 := c1.file(t, dir1, "probe", []byte("probe"), nil)
	ns1 := d.attach(t, "guest-c1", c1, "measure func=MMAP_CHECK mask=MAY_EXEC\nappraise func=MMAP_CHECK\n", probe1)
	gktest(t, true, "c1 attached with `appraise func=MMAP_CHECK`: its mount namespace is appraised in the kernel, the engine sees its opens")

	got := c1.do(t, "mmapx "+pGood)
	e := guestEntry(ns1, pGood, 5*time.Second)
	gktest(t, got == "ok" && len(e) == 1 && e[0] == sha256Hex(good),
		"a library whose security.ima verifies (appraised at its open) is mapped executable and measured: %s, %q", got, e)
	got = c1.do(t, "mmapx "+pBad)
	e = guestEntry(ns1, pBad, 5*time.Second)
	gktest(t, got == "err EACCES" && d.refusedWith("guest-c1", pBad, "invalid-hash"),
		"a library with a wrong security.ima hash: mmap(PROT_EXEC) fails with EACCES, logged as an appraisal failure (invalid-hash): %s", got)
	gktest(t, len(e) == 1 && e[0] == sha256Hex(bad),
		"the refused library is measured, as IMA measures before it appraises: %q", e)
	got = c1.do(t, "mmapx "+pNone)
	gktest(t, got == "err EACCES" && d.refusedWith("guest-c1", pNone, "missing-hash"),
		"a library without security.ima: EACCES, missing-hash: %s", got)
	got = c1.do(t, "mmapx "+pGood)
	gktest(t, got == "ok", "the verified library is mapped again: %s", got)

	got = c1.do(t, "run "+pBBGood)
	e = guestEntry(ns1, pBBGood, 5*time.Second)
	gktest(t, got == "ok" && len(e) == 1 && e[0] == sha256Hex(bb),
		"an exec'd binary whose security.ima verifies runs (the ELF loader's mapping is allowed) and is measured: %s, %q", got, e)
	got = c1.do(t, "run "+pBBBad+" hello")
	gktest(t, got != "ok" && d.refusedWith("guest-c1", pBBBad, "missing-hash"),
		"an exec'd binary without security.ima: the ELF loader's mapping is refused (the task dies after execve's point of no return): %s", got)

	// A new version of a verified file is appraised again at its open.
	host := fmt.Sprintf("/proc/%d/root%s", c1.Pid, pGood)
	changed := guestLib("good, rewritten")
	if err := os.WriteFile(host, changed, 0o755); err != nil {
		t.Fatal(err)
	}
	got = c1.do(t, "mmapx "+pGood)
	gktest(t, got == "err EACCES" && d.refusedWith("guest-c1", pGood, "invalid-hash"),
		"the verified library rewritten (its security.ima no longer matches): EACCES, invalid-hash: %s", got)
	gktest(t, violations(ns1, MmapAppraiseUnenforcedName) == 0,
		"no %s violation where the appraisal is enforced", MmapAppraiseUnenforcedName)

	guestOtherAndDetach(t, d, c1, ns1, bad, pBad, pNone)
	guestSigned(t, d)
}

// guestKeyDir holds each container's trusted keys (KeyDir/<id>/).
const guestKeyDir = "/tmp/guest-keys"

// imaSig signs data as evmctl's signature v2 (sha256) with key.
func imaSig(t *testing.T, key *ecdsa.PrivateKey, data []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(data)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	id, err := appraise.KeyID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	h := []byte{0x03, 0x02, 0x04, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[3:7], id)
	binary.BigEndian.PutUint16(h[7:9], uint16(len(sig)))
	return append(h, sig...)
}

// guestSigned: a container with `appraise func=MMAP_CHECK
// appraise_type=imasig` and its own key maps a library signed with that
// key; a hashed one, and one signed with a key it does not trust, are
// refused with the kernel's causes.
func guestSigned(t *testing.T, d *guestDaemon) {
	const dir = "/tmp/guest-c3"
	trusted, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&trusted.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(guestKeyDir+"/guest-c3", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(guestKeyDir+"/guest-c3/key.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	c3 := startGuestContainer(t)
	if got := c3.do(t, "mount "+dir); got != "ok" {
		t.Fatalf("mount in c3: %s", got)
	}
	signed, hashed, foreign := guestLib("signed"), guestLib("hashed"), guestLib("foreign")
	pSigned := c3.file(t, dir, "signed.so", signed, imaSig(t, trusted, signed))
	pHashed := c3.file(t, dir, "hashed.so", hashed, imaHash(hashed))
	pForeign := c3.file(t, dir, "foreign.so", foreign, imaSig(t, other, foreign))
	probe := c3.file(t, dir, "probe", []byte("probe"), nil)
	d.attach(t, "guest-c3", c3, "appraise func=MMAP_CHECK appraise_type=imasig\n", probe)
	got := c3.do(t, "mmapx "+pSigned)
	gktest(t, got == "ok", "imasig: a library signed with the container's key is mapped executable: %s", got)
	got = c3.do(t, "mmapx "+pHashed)
	gktest(t, got == "err EACCES" && d.refusedWith("guest-c3", pHashed, "IMA-signature-required"),
		"imasig: a library with only a hash: EACCES, IMA-signature-required: %s", got)
	got = c3.do(t, "mmapx "+pForeign)
	gktest(t, got == "err EACCES" && d.refusedWith("guest-c3", pForeign, "missing-key"),
		"imasig: a library signed with a key the container does not trust: EACCES, missing-key: %s", got)
}

// guestOtherAndDetach: another container, whose policy only measures, is
// not affected by c1's appraisal; once c1 is detached, its mappings are no
// longer refused.
func guestOtherAndDetach(t *testing.T, d *guestDaemon, c1 *guestContainer, ns1 *imans.Namespace, bad []byte, pBad, pNone string) {
	const dir2 = "/tmp/guest-c2"
	c2 := startGuestContainer(t)
	if got := c2.do(t, "mount "+dir2); got != "ok" {
		t.Fatalf("mount in c2: %s", got)
	}
	pBad2 := c2.file(t, dir2, "bad.so", bad, imaHash([]byte("other content")))
	probe2 := c2.file(t, dir2, "probe", []byte("probe"), nil)
	ns2 := d.attach(t, "guest-c2", c2, "measure func=MMAP_CHECK mask=MAY_EXEC\n", probe2)
	got := c2.do(t, "mmapx "+pBad2)
	e := guestEntry(ns2, pBad2, 5*time.Second)
	gktest(t, got == "ok" && len(e) == 1 && e[0] == sha256Hex(bad),
		"another container that does not appraise maps the same content and measures it: %s, %q", got, e)
	gktest(t, len(entries(ns1)[pBad2]) == 0 && len(entries(ns2)[pBad]) == 0,
		"neither container's list has the other's mappings")

	// Detached: c1's mount namespace is no longer appraised.
	if err := d.reg.Detach("guest-c1"); err != nil {
		t.Fatal(err)
	}
	got = c1.do(t, "mmapx "+pNone)
	gktest(t, got == "ok", "after c1 is detached its mappings are no longer refused: %s", got)
	refused := d.mm.refused.Load()
	gktest(t, refused >= 4, "refused mappings counted: %d", refused)
}
