package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
)

// The fanotify engine through the real daemon (`imafs serve --fanotify`)
// and real runc containers attached by the OCI hook. Each container's
// rootfs is a tmpfs this test mounts under its temp dir, so fanotify
// permission marks only ever land on file systems the test created (a
// host-visible tmpfs: mount marks on the containers' mounts of it).

// needFanotifyDaemon skips unless the daemon has the fanotify source wired.
func needFanotifyDaemon(t *testing.T) {
	t.Helper()
	needDaemon(t)
	harness.RequireTools(t, "runc", "sha256sum")
	out, _ := exec.Command(imafsBin, "serve", "--help").CombinedOutput()
	if !strings.Contains(string(out), "-fanotify") {
		t.Skip("imafs serve has no --fanotify flag (fanotify source not wired into the daemon)")
	}
}

// tmpfsRootfs mounts a tmpfs under a temp dir and fills it with the busybox
// rootfs plus copies of busybox named busybox-NAME (busybox runs argv[1]
// for such names).
func tmpfsRootfs(t *testing.T, copies ...string) string {
	t.Helper()
	dir := filepath.Join(harness.TempDir(t), "rootfs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("imafs-fanotify-test", dir, "tmpfs", 0, "size=128m,mode=755"); err != nil {
		t.Fatalf("mount tmpfs rootfs: %v", err)
	}
	t.Cleanup(func() {
		if unix.Unmount(dir, 0) != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	harness.BusyboxRootfs(t, dir)
	bb, err := os.ReadFile(filepath.Join(dir, "bin/busybox"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range copies {
		if err := os.WriteFile(filepath.Join(dir, "bin", "busybox-"+c), bb, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		t.Fatalf("sha256sum %s: %v", path, err)
	}
	return strings.Fields(string(out))[0]
}

// measured returns the ascii list lines whose name is name.
func measured(list, name string) []string {
	var out []string
	for _, l := range lines(list) {
		if f := strings.Fields(l); len(f) >= 5 && f[4] == name {
			out = append(out, l)
		}
	}
	return out
}

func runIn(t *testing.T, c *harness.RuncContainer, args ...string) string {
	t.Helper()
	out, err := c.Exec(0, args...)
	if err != nil {
		t.Fatalf("%s: %v: %v\n%s", c.ID, args, err, out)
	}
	return out
}

// TestFanotifyMeasure: root in a runc container writes
// `measure func=BPRM_CHECK`; executed binaries appear once with the sha256
// of sha256sum, again after they change; another container's execs never
// appear in its list; the host list holds both.
func TestFanotifyMeasure(t *testing.T) {
	needFanotifyDaemon(t)
	d := startDaemon(t, "--fanotify")
	r1 := tmpfsRootfs(t, "probe")
	r2 := tmpfsRootfs(t, "other")
	c1 := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Rootfs: r1, Capabilities: []string{"CAP_SYS_ADMIN"}})
	c2 := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Rootfs: r2, Capabilities: []string{"CAP_SYS_ADMIN"}})
	for _, c := range []*harness.RuncContainer{c1, c2} {
		runIn(t, c, "sh", "-c", "echo 'measure func=BPRM_CHECK' > "+ima+"/policy")
	}
	want := sha256File(t, filepath.Join(r1, "bin/busybox-probe"))
	runIn(t, c1, "/bin/busybox-probe", "true")
	runIn(t, c1, "/bin/busybox-probe", "true")
	list := runIn(t, c1, "cat", ima+"/ascii_runtime_measurements")
	got := measured(list, "/bin/busybox-probe")
	if len(got) != 1 || strings.Fields(got[0])[3] != "sha256:"+want {
		t.Fatalf("c1 list entries for /bin/busybox-probe: %q, want one with sha256:%s\n%s", got, want, list)
	}
	if len(measured(list, "/bin/busybox")) != 1 {
		t.Errorf("c1: /bin/busybox (cat, sh) not measured exactly once:\n%s", list)
	}

	f, err := os.OpenFile(filepath.Join(r1, "bin/busybox-probe"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "changed")
	f.Close()
	want2 := sha256File(t, filepath.Join(r1, "bin/busybox-probe"))
	runIn(t, c1, "/bin/busybox-probe", "true")
	list = runIn(t, c1, "cat", ima+"/ascii_runtime_measurements")
	got = measured(list, "/bin/busybox-probe")
	if len(got) != 2 || strings.Fields(got[1])[3] != "sha256:"+want2 {
		t.Fatalf("c1 after the change: %q, want a second entry with sha256:%s", got, want2)
	}

	runIn(t, c2, "/bin/busybox-other", "true")
	list2 := runIn(t, c2, "cat", ima+"/ascii_runtime_measurements")
	if len(measured(list2, "/bin/busybox-other")) != 1 || len(measured(list2, "/bin/busybox-probe")) != 0 {
		t.Errorf("c2 list:\n%s", list2)
	}
	if list = runIn(t, c1, "cat", ima+"/ascii_runtime_measurements"); len(measured(list, "/bin/busybox-other")) != 0 {
		t.Errorf("c1's list has c2's exec:\n%s", list)
	}
	// evmctl verifies c1's binary list (read by its root) against the PCRs
	// the daemon reports for it.
	if _, err := exec.LookPath("evmctl"); err == nil {
		bin := runIn(t, c1, "cat", ima+"/binary_runtime_measurements")
		listFile := filepath.Join(harness.TempDir(t), "binary_runtime_measurements")
		os.WriteFile(listFile, []byte(bin), 0o644)
		evmctlMatches(t, listFile, d.ps(t)[c1.ID])
	}
	host, err := os.ReadFile(filepath.Join(d.hostMnt, "ima/ascii_runtime_measurements"))
	if err != nil {
		t.Fatal(err)
	}
	if len(measured(string(host), "/bin/busybox-probe")) != 2 || len(measured(string(host), "/bin/busybox-other")) != 1 {
		t.Errorf("host list lacks the containers' measurements:\n%s", host)
	}
}

// TestFanotifyAppraise: with `appraise func=BPRM_CHECK appraise_type=imasig`
// written by the container's root, binaries signed with `evmctl ima_sign`
// by the container's key (in the daemon's --fanotify-keys DIR/<container id>) run;
// one signed by another key is denied with EPERM.
func TestFanotifyAppraise(t *testing.T) {
	needFanotifyDaemon(t)
	harness.RequireTools(t, "evmctl", "openssl")
	keys := filepath.Join(harness.TempDir(t), "keys")
	metricsAddr := freeLocalAddr(t)
	d := startDaemon(t, "--fanotify", "--fanotify-keys", keys, "--metrics-addr", metricsAddr)
	root := tmpfsRootfs(t, "mine", "theirs")
	dir := harness.TempDir(t)
	if out, err := harness.Run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", filepath.Join(dir, "mine.key"),
		"-out", filepath.Join(dir, "mine.crt"), "-days", "2", "-subj", "/CN=imafs container key"); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	if out, err := harness.Run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", filepath.Join(dir, "theirs.key")); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	for bin, key := range map[string]string{"busybox": "mine", "busybox-mine": "mine", "busybox-theirs": "theirs"} {
		if out, err := harness.Run("evmctl", "ima_sign", "--key", filepath.Join(dir, key+".key"), filepath.Join(root, "bin", bin)); err != nil {
			t.Fatalf("evmctl ima_sign %s: %v\n%s", bin, err, out)
		}
	}
	c := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Rootfs: root, Capabilities: []string{"CAP_SYS_ADMIN"}})
	crt, _ := os.ReadFile(filepath.Join(dir, "mine.crt"))
	if err := os.MkdirAll(filepath.Join(keys, c.ID), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, c.ID, "mine.crt"), crt, 0o644); err != nil {
		t.Fatal(err)
	}
	runIn(t, c, "sh", "-c", "echo 'appraise func=BPRM_CHECK appraise_type=imasig' > "+ima+"/policy")
	runIn(t, c, "/bin/busybox-mine", "true")
	out, err := c.Exec(0, "/bin/busybox-theirs", "true")
	if err == nil || !strings.Contains(strings.ToLower(out+err.Error()), "operation not permitted") {
		t.Fatalf("binary signed by another key: %v\n%s; want EPERM", err, out)
	}
	runIn(t, c, "/bin/busybox-mine", "true") // still allowed (cached)

	// The daemon's metrics count the denial with the kernel's audit cause
	// (the signature's key is not the container's), and the events'
	// latencies; nothing is left waiting.
	text := harness.Scrape(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{
		`imafs_denials_total{namespace="` + c.ID + `",reason="missing-key",source="fanotify"} 1`,
		`imafs_queue_depth{source="fanotify"} 0`,
	} {
		if !harness.HasLine(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if n := metricValue(t, text, `imafs_event_latency_seconds_count{source="fanotify"}`); n < 3 {
		t.Errorf("event latency histogram counts %v events, want at least the 3 execs", n)
	}
	// Every answer is in the histogram (scraped again if an event came in
	// between the two series).
	for try := 0; ; try++ {
		allowed := metricValue(t, text, `imafs_source_answers_total{answer="allow",source="fanotify"}`)
		denied := metricValue(t, text, `imafs_source_answers_total{answer="deny",source="fanotify"}`)
		observed := metricValue(t, text, `imafs_event_latency_seconds_count{source="fanotify"}`)
		if allowed+denied == observed && denied == 1 {
			break
		}
		if try == 3 {
			t.Fatalf("%v allowed and %v denied answers, %v latencies observed", allowed, denied, observed)
		}
		time.Sleep(100 * time.Millisecond)
		text = harness.Scrape(t, "http://"+metricsAddr+"/metrics")
	}
}

// freeLocalAddr returns a 127.0.0.1 address with a port free a moment ago.
func freeLocalAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// metricValue is the value of the series named exactly by series.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("metrics lack %s", series)
	return 0
}
