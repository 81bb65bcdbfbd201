package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// podmanDaemon starts a fanotify daemon whose containers start with policy
// (a --container-policy file; none if empty), and a podman whose hooks directory holds the
// repository's contrib/hooks.d files pointed at that daemon (hook path: the
// test binary; env IMAFS_SOCKET: the daemon's socket).
func podmanDaemon(t *testing.T, policy string, extra ...string) (*daemon, *harness.Podman) {
	t.Helper()
	needFanotifyDaemon(t)
	harness.RequireTools(t, "podman")
	d := fanotifyDaemon(t, policy, extra...)
	p := harness.NewPodman(t)
	p.InstallHooks(t, "../contrib/hooks.d", imafsBin, "IMAFS_SOCKET="+d.socket)
	return d, p
}

// fanotifyDaemon starts a fanotify daemon whose containers start with
// policy (a --container-policy file; none if empty).
func fanotifyDaemon(t *testing.T, policy string, extra ...string) *daemon {
	t.Helper()
	args := []string{"--fanotify"}
	if policy != "" {
		pf := filepath.Join(t.TempDir(), "container-policy")
		if err := os.WriteFile(pf, []byte(policy), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--container-policy", pf)
	}
	return startDaemon(t, append(args, extra...)...)
}

// podmanRun starts `podman run -d --name NAME RunArgs ARGS... IMAGE sleep
// 300` and returns the container's full id; Cleanup removes it.
func podmanRun(t *testing.T, p *harness.Podman, name string, args ...string) string {
	t.Helper()
	run := append([]string{"run", "-d", "--name", name}, harness.RunArgs()...)
	run = append(append(run, args...), harness.PodmanImage, "sleep", "300")
	if _, err := p.Run(60*time.Second, run...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Run(60*time.Second, "rm", "--force", "--time", "0", name) })
	id, err := p.ID(name)
	if err != nil || id == "" {
		t.Fatalf("podman inspect %s: %q, %v", name, id, err)
	}
	return id
}

// podmanExec runs ARGS in the container as user ("" = the image's root).
func podmanExec(p *harness.Podman, name, user string, args ...string) (string, error) {
	ex := []string{"exec"}
	if user != "" {
		ex = append(ex, "--user", user)
	}
	return p.Run(30*time.Second, append(append(ex, name), args...)...)
}

// TestPodman: rootful podman (runc, overlay or vfs storage, a locally
// imported image) with the shipped hooks.d files and default capabilities:
// the createRuntime hook attaches the container under podman's id, its root
// reads its own list (boot_aggregate, the oci-config entry, its execs
// measured by the fanotify engine), uid 1000 may not; `imafs ps` shows it
// while it runs; it is detached after `podman stop`; podman's file bind
// mounts (/etc/hosts, /etc/hostname, /run/.containerenv) are marked and the
// daemon logs no warning (the poststop detach after the container detached
// itself included).
func TestPodman(t *testing.T) {
	d, p := podmanDaemon(t, "measure func=BPRM_CHECK\n")
	t.Logf("podman storage driver: %s", p.Driver)
	start := time.Now()
	id := podmanRun(t, p, "imafs-probe")
	t.Logf("podman run -d: %v", time.Since(start))
	row, ok := d.ps(t)[id]
	if !ok {
		t.Fatalf("imafs ps has no %s:\n%v\n%s", id, d.ps(t), d.logText())
	}
	if pid, err := p.Pid(id); err != nil || pid != row.Pid {
		t.Errorf("ps pid %d, podman's %d (%v)", row.Pid, pid, err)
	}
	if _, err := podmanExec(p, "imafs-probe", "", "/bin/busybox", "true"); err != nil {
		t.Fatal(err)
	}
	list, err := podmanExec(p, "imafs-probe", "", "cat", ima+"/ascii_runtime_measurements")
	if err != nil {
		t.Fatalf("root reads its list: %v", err)
	}
	if ls := lines(list); len(ls) < 3 || !strings.HasSuffix(ls[0], " boot_aggregate") ||
		!strings.Contains(ls[1], " ima-buf ") || !strings.Contains(ls[1], " oci-config ") {
		t.Errorf("list does not start with boot_aggregate and oci-config:\n%s", list)
	}
	bb := sha256File(t, filepath.Join(p.Dir, "image-rootfs/bin/busybox"))
	if got := measured(list, "/bin/busybox"); len(got) != 1 || strings.Fields(got[0])[3] != "sha256:"+bb {
		t.Errorf("/bin/busybox entries %q, want one sha256:%s\n%s", got, bb, list)
	}
	if out, err := podmanExec(p, "imafs-probe", "1000", "cat", ima+"/ascii_runtime_measurements"); err == nil {
		t.Errorf("uid 1000 read the list: %q", out)
	}
	host, err := os.ReadFile(filepath.Join(d.hostMnt, "ima/ascii_runtime_measurements"))
	if err != nil || len(measured(string(host), "/bin/busybox")) == 0 {
		t.Errorf("host list lacks the container's exec (%v):\n%s", err, host)
	}
	marked := map[string]bool{}
	for _, l := range lines(d.logText()) {
		for _, f := range strings.Fields(l) {
			if strings.Contains(l, "fanotify: marked") && strings.HasPrefix(f, "mount=") {
				marked[strings.TrimPrefix(f, "mount=")] = true
			}
		}
	}
	// Marked by the createRuntime scan, before pivot_root: host paths.
	for _, m := range []string{"/etc/hosts", "/etc/hostname", "/run/.containerenv"} {
		found := false
		for k := range marked {
			found = found || strings.HasSuffix(k, m)
		}
		if !found {
			t.Errorf("file bind mount %s not marked (marked: %v)", m, marked)
		}
	}
	start = time.Now()
	if _, err := p.Run(60*time.Second, "stop", "--time", "0", "imafs-probe"); err != nil {
		t.Fatal(err)
	}
	d.waitDetached(t, id)
	t.Logf("podman stop to detached: %v", time.Since(start))
	if _, err := p.Run(60*time.Second, "rm", "imafs-probe"); err != nil {
		t.Error(err)
	}
	noWarnings(t, d)
}

// noWarnings fails t if the daemon logged a warning or an error.
func noWarnings(t *testing.T, d *daemon) {
	t.Helper()
	for _, l := range lines(d.logText()) {
		if strings.Contains(l, "level=warning") || strings.Contains(l, "level=error") {
			t.Errorf("daemon log: %s", l)
		}
	}
}

// TestPodmanAnnotationPolicy: the orchestrator's policy reaches a container
// whose root cannot write one: `podman run --annotation
// org.imafs.policy=RULES` or `org.imafs.policy-file=NAME` (a file in the
// daemon's --policy-dir) is the container's policy from its first exec (its
// execs measured; the host reads it back); a bad rule, a path instead of a
// name, or both annotations fail the container's start and leave nothing
// attached.
func TestPodmanAnnotationPolicy(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "exec-and-read"), []byte("measure func=BPRM_CHECK\nmeasure func=FILE_CHECK mask=MAY_READ uid=0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, p := podmanDaemon(t, "", "--policy-dir", dir)
	bb := sha256File(t, filepath.Join(p.Dir, "image-rootfs/bin/busybox"))
	for _, tc := range []struct{ name, annotation, policy string }{
		{"inline", "org.imafs.policy=measure func=BPRM_CHECK", "measure func=BPRM_CHECK \n"}, // read back as the kernel prints it
		{"file", "org.imafs.policy-file=exec-and-read", "measure func=BPRM_CHECK \nmeasure func=FILE_CHECK mask=MAY_READ uid=0 \n"},
	} {
		id := podmanRun(t, p, "imafs-"+tc.name, "--annotation", tc.annotation)
		if got, err := d.imafs("policy", id); err != nil || got != tc.policy {
			t.Errorf("%s: policy %q, %v; want %q", tc.name, got, err, tc.policy)
		}
		list, err := podmanExec(p, "imafs-"+tc.name, "", "cat", ima+"/ascii_runtime_measurements")
		if err != nil {
			t.Fatal(err)
		}
		if got := measured(list, "/bin/busybox"); len(got) != 1 || strings.Fields(got[0])[3] != "sha256:"+bb {
			t.Errorf("%s: /bin/busybox entries %q\n%s", tc.name, got, list)
		}
		if tc.name == "file" && len(measured(list, "/etc/hosts")) != 0 {
			t.Errorf("file: the FILE_CHECK rule measured /etc/hosts before it was read:\n%s", list)
		}
	}
	noWarnings(t, d)
	for _, bad := range []struct{ name, annotation, want string }{
		{"badrule", "org.imafs.policy=measure func=NOPE", "starting policy"},
		{"path", "org.imafs.policy-file=" + filepath.Join(dir, "exec-and-read"), "not a plain file name"},
		{"missing", "org.imafs.policy-file=nope", "no such file"},
	} {
		run := append([]string{"run", "-d", "--name", "imafs-" + bad.name, "--annotation", bad.annotation}, harness.RunArgs()...)
		out, err := p.Run(60*time.Second, append(run, harness.PodmanImage, "sleep", "300")...)
		t.Cleanup(func() { p.Run(60*time.Second, "rm", "--force", "--time", "0", "imafs-"+bad.name) })
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: podman run: %q, %v; want a failure naming %q", bad.name, out, err, bad.want)
		}
	}
	if rows := d.ps(t); len(rows) != 3 { // the host and the two good containers
		t.Errorf("ps after the refused starts: %v", rows)
	}
}
