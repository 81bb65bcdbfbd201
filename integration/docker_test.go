package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// TestDocker: Debian's dockerd with a daemon.json runtime "imafs" → `imafs
// runtime --socket S --runc RUNC --` (the runc wrapper that adds imafs's
// hooks to the bundle): `docker run --runtime imafs --network none` of an
// imported busybox image, default capabilities. It is attached under
// Docker's container id; its root reads its list (boot_aggregate, the
// oci-config entry of the edited config.json, its exec measured under
// --container-policy); it is detached after `docker stop`; a container of
// Docker's default runtime is never attached; the daemon logs no warning.
func TestDocker(t *testing.T) {
	needFanotifyDaemon(t)
	d := fanotifyDaemon(t, "measure func=BPRM_CHECK\n")
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("needs runc")
	}
	start := time.Now()
	dk := harness.StartDocker(t, map[string]any{
		"imafs": map[string]any{"path": imafsBin, "runtimeArgs": []string{"runtime", "--socket", d.socket, "--runc", runc, "--"}},
	})
	t.Logf("dockerd ready: %v", time.Since(start))
	rootfs := dk.ImportBusybox(t, "imafs-busybox:test")
	start = time.Now()
	out, err := dk.Run(60*time.Second, "run", "-d", "--name", "imafs-probe", "--network", "none", "--runtime", "imafs", "imafs-busybox:test", "sleep", "300")
	if err != nil {
		t.Fatalf("%v\n%s", err, d.logText())
	}
	t.Logf("docker run -d --runtime imafs: %v", time.Since(start))
	id := strings.TrimSpace(out)
	if _, ok := d.ps(t)[id]; !ok {
		t.Fatalf("imafs ps has no %s: %v", id, d.ps(t))
	}
	list, err := dk.Run(30*time.Second, "exec", "imafs-probe", "cat", ima+"/ascii_runtime_measurements")
	if err != nil {
		t.Fatalf("root reads its list: %v", err)
	}
	ls := lines(list)
	if len(ls) < 3 || !strings.HasSuffix(ls[0], " boot_aggregate") || !strings.Contains(ls[1], " oci-config ") {
		t.Errorf("list does not start with boot_aggregate and oci-config:\n%s", list)
	}
	bb := sha256File(t, filepath.Join(rootfs, "bin/busybox"))
	if got := measured(list, "/bin/busybox"); len(got) != 1 || strings.Fields(got[0])[3] != "sha256:"+bb {
		t.Errorf("/bin/busybox entries %q, want one sha256:%s\n%s", got, bb, list)
	}
	if out, err := dk.Run(30*time.Second, "exec", "--user", "1000", "imafs-probe", "cat", ima+"/ascii_runtime_measurements"); err == nil {
		t.Errorf("uid 1000 read the list: %q", out)
	}
	// Docker's default runtime (plain runc): no hooks, not attached.
	plain, err := dk.Run(60*time.Second, "run", "-d", "--network", "none", "imafs-busybox:test", "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.ps(t)[strings.TrimSpace(plain)]; ok || len(d.ps(t)) != 2 {
		t.Errorf("a runc container was attached: %v", d.ps(t))
	}
	start = time.Now()
	if _, err := dk.Run(60*time.Second, "stop", "--time", "0", "imafs-probe"); err != nil {
		t.Fatal(err)
	}
	d.waitDetached(t, id)
	t.Logf("docker stop to detached: %v", time.Since(start))
	noWarnings(t, d)
}
