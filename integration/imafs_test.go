package integration

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/imafs/imafs/integration/harness"
)

func hooks(d *daemon) map[string][]harness.Hook {
	hook := func(stage string) []harness.Hook {
		return []harness.Hook{{Path: imafsBin, Args: []string{"imafs", "oci-hook", "--socket", d.socket, stage}, Timeout: 20}}
	}
	return map[string][]harness.Hook{"createRuntime": hook("createRuntime"), "poststop": hook("poststop")}
}

// checkInitialList checks a fresh container list: boot_aggregate, then the
// ima-buf entry over the bundle's config.json.
func checkInitialList(t *testing.T, list string, config []byte) {
	t.Helper()
	ls := lines(list)
	if len(ls) != 2 {
		t.Fatalf("container list has %d lines, want 2:\n%s", len(ls), list)
	}
	if f := strings.Fields(ls[0]); len(f) != 5 || f[0] != "10" || f[2] != "ima-ng" || f[4] != "boot_aggregate" ||
		f[3] != "sha256:"+strings.Repeat("0", 64) {
		t.Errorf("first line %q, want a zero boot_aggregate", ls[0])
	}
	sum := sha256.Sum256(config)
	f := strings.Fields(ls[1])
	if len(f) != 6 || f[0] != "10" || f[2] != "ima-buf" || f[4] != "oci-config" {
		t.Fatalf("second line %q, want the ima-buf oci-config entry", ls[1])
	}
	if f[3] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("oci-config digest %s, want sha256 of config.json %x", f[3], sum)
	}
	if f[5] != hex.EncodeToString(config) {
		t.Errorf("oci-config buf is not the config.json bytes")
	}
}

// TestRuncHook: a real runc container with the OCI hook in config.json gets
// its own /sys/kernel/security/ima; root in it reads its list and writes its
// policy; a non-root user gets EACCES; the host sees it; poststop/exit detaches.
func TestRuncHook(t *testing.T) {
	d := startDaemon(t)
	c := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Capabilities: []string{"CAP_SYS_ADMIN"}})
	config, err := os.ReadFile(filepath.Join(c.Bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements")
	if err != nil {
		t.Fatal(err)
	}
	checkInitialList(t, list, config)
	if n, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil || n != "2\n" {
		t.Errorf("count %q, %v; want 2", n, err)
	}
	if v, err := c.Exec(0, "cat", ima+"/violations"); err != nil || v != "0\n" {
		t.Errorf("violations %q, %v", v, err)
	}
	// The symlinks and the per-bank files are there.
	if out, err := c.Exec(0, "ls", "-l", "/sys/kernel/security/"); err != nil || !strings.Contains(out, "ima -> integrity/ima") {
		t.Errorf("ls /sys/kernel/security: %q, %v", out, err)
	}
	if out, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements_sha256"); err != nil || len(lines(out)) != 2 || len(strings.Fields(lines(out)[0])[1]) != 64 {
		t.Errorf("sha256 list %q, %v", out, err)
	}

	// Policy: write, read back, a bad rule changes nothing.
	if _, err := c.Exec(0, "sh", "-c", "echo 'measure func=BPRM_CHECK mask=MAY_EXEC' > "+ima+"/policy"); err != nil {
		t.Fatal(err)
	}
	if p, err := c.Exec(0, "cat", ima+"/policy"); err != nil || p != "measure func=BPRM_CHECK mask=MAY_EXEC \n" {
		t.Errorf("policy read-back %q, %v", p, err)
	}
	if _, err := c.Exec(0, "sh", "-c", "echo 'measure func=NOPE' > "+ima+"/policy"); err == nil || !strings.Contains(err.Error(), "Invalid argument") {
		t.Errorf("bad rule: %v, want Invalid argument", err)
	}
	if p, _ := c.Exec(0, "cat", ima+"/policy"); p != "measure func=BPRM_CHECK mask=MAY_EXEC \n" {
		t.Errorf("policy after a bad rule %q, want unchanged", p)
	}
	// A non-root user: EACCES for everything.
	for _, argv := range [][]string{
		{"cat", ima + "/ascii_runtime_measurements"},
		{"cat", ima + "/runtime_measurements_count"},
		{"cat", ima + "/policy"},
		{"sh", "-c", "echo 'measure func=FILE_CHECK' > " + ima + "/policy"},
	} {
		if _, err := c.Exec(harness.NonRootUID, argv...); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("non-root %q: %v, want Permission denied", argv, err)
		}
	}

	// The host: ps shows it, the host list has its entries.
	row, ok := d.ps(t)[c.ID]
	if !ok || row.Pid != c.Pid || row.Entries != 2 || row.Rules != 1 || len(row.PCR10SHA256) != 64 || len(row.PCR10SHA1) != 40 {
		t.Errorf("ps row %+v (ok %v)", row, ok)
	}
	host, err := os.ReadFile(filepath.Join(d.hostMnt, "ima/ascii_runtime_measurements"))
	if err != nil || !strings.Contains(string(host), hex.EncodeToString(config)) {
		t.Errorf("host list lacks the container's oci-config: %v", err)
	}
	// The container exits: it is detached.
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	d.waitDetached(t, c.ID)
}

// TestRuncUserNamespace: root of a user-namespaced container (host uid
// 100000) reads its list and writes its policy.
func TestRuncUserNamespace(t *testing.T) {
	d := startDaemon(t)
	c := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), User: true, Capabilities: []string{"CAP_SYS_ADMIN"}})
	config, _ := os.ReadFile(filepath.Join(c.Bundle, "config.json"))
	list, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements")
	if err != nil {
		t.Fatal(err)
	}
	checkInitialList(t, list, config)
	if _, err := c.Exec(0, "sh", "-c", "echo 'measure func=FILE_CHECK mask=MAY_READ' > "+ima+"/policy"); err != nil {
		t.Fatal(err)
	}
	if p, err := c.Exec(0, "cat", ima+"/policy"); err != nil || p != "measure func=FILE_CHECK mask=MAY_READ \n" {
		t.Errorf("policy %q, %v", p, err)
	}
	if _, err := c.Exec(harness.NonRootUID, "cat", ima+"/ascii_runtime_measurements"); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("non-root in userns container: %v, want Permission denied", err)
	}
	// Its policy is its own: the host's is untouched.
	if p, err := d.imafs("policy", "host"); err == nil && p != "" {
		t.Errorf("host policy %q", p)
	}
}

// attachUnshare attaches an unshare container through `imafs attach`.
func attachUnshare(t *testing.T, d *daemon, u *harness.Unshare, id string) {
	t.Helper()
	if out, err := d.imafs("attach", "--pid", itoa(u.Pid), "--id", id); err != nil {
		t.Fatalf("attach %s: %v", id, err)
	} else if !strings.Contains(out, "attached "+id) {
		t.Errorf("attach output %q", out)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// busyboxContainer starts a chroot'ed busybox unshare container.
func busyboxContainer(t *testing.T, user bool) *harness.Unshare {
	t.Helper()
	root, err := os.MkdirTemp("", "imafs-rootfs-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755)
	t.Cleanup(func() { os.RemoveAll(root) })
	harness.BusyboxRootfs(t, root)
	return harness.StartUnshare(t, harness.UnshareOptions{Root: root, User: user})
}

// TestSideBySide: two containers see only their own entries; the host sees
// both; a child mount namespace and an unregistered nested pid namespace
// inside a container see that container's view; a registered nested
// container sees its own.
func TestSideBySide(t *testing.T) {
	d := startDaemon(t)
	a, b := busyboxContainer(t, false), busyboxContainer(t, false)
	attachUnshare(t, d, a, "side-a")
	attachUnshare(t, d, b, "side-b")
	for _, c := range []*harness.Unshare{a, b} {
		if _, err := c.Exec(0, "sh", "-c", "echo 'measure func=FILE_CHECK' > "+ima+"/policy"); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "measured")
	if err := os.WriteFile(file, []byte("side by side\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.imafs("measure", "--id", "side-a", "--name", "/only-in-a", file); err != nil {
		t.Fatal(err)
	}
	if _, err := d.imafs("measure", "--id", "side-b", "--name", "/only-in-b", file); err != nil {
		t.Fatal(err)
	}
	want := map[*harness.Unshare]string{a: "boot_aggregate /only-in-a", b: "boot_aggregate /only-in-b"}
	for c, w := range want {
		list, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(names(list), " "); got != w {
			t.Errorf("container %d sees %q, want %q", c.Pid, got, w)
		}
	}
	// The host sees all (a list and the CLI agree).
	hostList, err := os.ReadFile(filepath.Join(d.hostMnt, "ima/ascii_runtime_measurements"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(string(hostList)), " "); got != "boot_aggregate /only-in-a /only-in-b" {
		t.Errorf("host sees %q", got)
	}
	if out, err := d.imafs("log", "--host"); err != nil {
		t.Errorf("imafs log --host: %v", err)
	} else if out != string(hostList) {
		t.Errorf("imafs log --host %q, want the host list %q", out, hostList)
	}
	if out, err := d.imafs("log", "side-a"); err != nil || strings.Join(names(out), " ") != want[a] {
		t.Errorf("imafs log side-a: %q, %v", out, err)
	}

	listA, _ := a.Exec(0, "cat", ima+"/ascii_runtime_measurements")
	// A child mount namespace inside a still sees a's view.
	if out, err := a.Exec(0, "unshare", "-m", "cat", ima+"/ascii_runtime_measurements"); err != nil || out != listA {
		t.Errorf("unshare -m in a: %q, %v; want a's list", out, err)
	}
	// An unregistered nested container sees a's view.
	nested := a.Nested(t, harness.UnshareOptions{})
	if out, err := nested.Exec(0, "cat", ima+"/ascii_runtime_measurements"); err != nil || out != listA {
		t.Errorf("unregistered nested container: %q, %v; want a's list", out, err)
	}
	// A registered nested container sees its own.
	attachUnshare(t, d, nested, "side-a-nested")
	out, err := nested.Exec(0, "cat", ima+"/ascii_runtime_measurements")
	if err != nil || strings.Join(names(out), " ") != "boot_aggregate" {
		t.Errorf("registered nested container: %q, %v; want its own list", out, err)
	}
	if out, _ := a.Exec(0, "cat", ima+"/ascii_runtime_measurements"); out != listA {
		t.Errorf("a's view changed after the nested attach: %q", out)
	}
	// A non-root user of a: EACCES.
	if _, err := a.Exec(harness.NonRootUID, "cat", ima+"/ascii_runtime_measurements"); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("non-root in a: %v", err)
	}
	// Detach by command: the tree is gone from the container.
	if _, err := d.imafs("detach", "--id", "side-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(0, "cat", ima+"/ascii_runtime_measurements"); err == nil {
		t.Error("b still reads a list after detach")
	}
	// a exits: it and its nested container are detached.
	a.Kill()
	d.waitDetached(t, "side-a")
	d.waitDetached(t, "side-a-nested")
}

// TestUnshareUserNamespace: a user-namespaced unshare container (0 → 100000).
func TestUnshareUserNamespace(t *testing.T) {
	d := startDaemon(t)
	u := busyboxContainer(t, true)
	attachUnshare(t, d, u, "userns")
	if out, err := u.Exec(0, "cat", ima+"/ascii_runtime_measurements"); err != nil || strings.Join(names(out), " ") != "boot_aggregate" {
		t.Errorf("userns root: %q, %v", out, err)
	}
	if _, err := u.Exec(0, "sh", "-c", "echo 'measure func=BPRM_CHECK' > "+ima+"/policy"); err != nil {
		t.Errorf("userns root policy write: %v", err)
	}
	if _, err := u.Exec(harness.NonRootUID, "cat", ima+"/ascii_runtime_measurements"); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("userns non-root: %v", err)
	}
	// A policy loaded by path is read in the container's root.
	if _, err := u.Exec(0, "sh", "-c", "printf 'measure func=MMAP_CHECK mask=MAY_EXEC\\n' > /tmp/p && echo /tmp/p > "+ima+"/policy"); err != nil {
		t.Errorf("load policy by path: %v", err)
	}
	if p, err := u.Exec(0, "cat", ima+"/policy"); err != nil || p != "measure func=BPRM_CHECK \nmeasure func=MMAP_CHECK mask=MAY_EXEC \n" {
		t.Errorf("policy after a path load: %q, %v", p, err)
	}
}

// TestRaces: many short-lived callers across containers (pid churn): every
// answer is the caller's own container's.
func TestRaces(t *testing.T) {
	d := startDaemon(t)
	const n = 3
	var ctrs []*harness.Unshare
	want := map[*harness.Unshare]string{}
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, []byte("race"), 0o644)
	for i := 0; i < n; i++ {
		c := busyboxContainer(t, false)
		id := "race-" + itoa(i)
		attachUnshare(t, d, c, id)
		c.Exec(0, "sh", "-c", "echo 'measure func=FILE_CHECK' > "+ima+"/policy")
		if _, err := d.imafs("measure", "--id", id, "--name", "/mark-"+id, file); err != nil {
			t.Fatal(err)
		}
		out, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements")
		if err != nil {
			t.Fatal(err)
		}
		want[c] = out
		ctrs = append(ctrs, c)
	}
	sums := map[*harness.Unshare]string{}
	for _, c := range ctrs {
		sum := md5.Sum([]byte(want[c]))
		sums[c] = hex.EncodeToString(sum[:])
	}
	// Each call: a new nsenter + sh, which runs 20 short-lived cat|md5sum
	// pairs (40 fresh pids in the container per call).
	loop := "i=0; while [ $i -lt 20 ]; do cat " + ima + "/ascii_runtime_measurements | md5sum; i=$((i+1)); done"
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrong, total := 0, 0
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				c := ctrs[(w+i)%n]
				out, err := c.Exec(0, "sh", "-c", loop)
				mu.Lock()
				if err != nil {
					wrong++
					t.Errorf("container %d: %v", c.Pid, err)
				}
				for _, l := range lines(out) {
					total++
					if f := strings.Fields(l); len(f) == 0 || f[0] != sums[c] {
						wrong++
						if wrong < 5 {
							t.Errorf("container %d: md5 %q, want %s", c.Pid, l, sums[c])
						}
					}
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if total != 6*8*20 {
		t.Errorf("%d answers, want %d", total, 6*8*20)
	}
	t.Logf("%d reads from short-lived callers in %d containers, %d wrong-view answers", total, n, wrong)
	if wrong != 0 {
		t.Errorf("%d of %d answers from the wrong view", wrong, total)
	}
}

// TestAttachRunningRunc: `imafs attach --pid --bundle` on a runc container
// that is already running (after pivot_root, no hooks).
func TestAttachRunningRunc(t *testing.T) {
	d := startDaemon(t)
	c := harness.NewRuncContainer(t, harness.RuncOptions{Capabilities: []string{"CAP_SYS_ADMIN"}})
	if _, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements"); err == nil {
		t.Fatal("an ima directory before attach")
	}
	if _, err := d.imafs("attach", "--pid", itoa(c.Pid), "--id", "late", "--bundle", c.Bundle); err != nil {
		t.Fatal(err)
	}
	config, _ := os.ReadFile(filepath.Join(c.Bundle, "config.json"))
	list, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements")
	if err != nil {
		t.Fatal(err)
	}
	checkInitialList(t, list, config)
	// Attaching again with the same pid is a no-op; another pid under the same id is refused.
	if _, err := d.imafs("attach", "--pid", itoa(c.Pid), "--id", "late"); err != nil {
		t.Errorf("repeated attach: %v", err)
	}
	if _, err := d.imafs("attach", "--pid", itoa(os.Getpid()), "--id", "late"); err == nil {
		t.Error("attach of another pid under a used id succeeded")
	}
	if _, err := d.imafs("attach", "--pid", itoa(os.Getpid()), "--id", "hostpid"); err == nil || !strings.Contains(err.Error(), "host pid namespace") {
		t.Errorf("attach of a host process: %v, want a host pid namespace error", err)
	}
	if _, err := d.imafs("detach", "--id", "late"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements"); err == nil {
		t.Error("the ima directory is still there after detach")
	}
}
