package integration

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// TestContainerdNRI: containerd 2.4.2 (CRI, NRI on, every path under the
// test's directory, a private /run) with `imafs nri-plugin` registered on
// its NRI socket; crictl runs two pods (host network, no CNI) of one
// container each from a hand-made OCI image. Each container is attached
// under its CRI container ID (never its pod's sandbox), its root reads only
// its own list (its own oci-config entry, its exec measured), the host's
// list holds both; `crictl stop` detaches it.
func TestContainerdNRI(t *testing.T) {
	needFanotifyDaemon(t)
	d := fanotifyDaemon(t, "measure func=BPRM_CHECK\n")
	const image = "localhost/imafs-busybox:test"
	c := harness.StartContainerd(t, image)
	rootfs := filepath.Join(c.Dir, "image-rootfs")
	harness.BusyboxRootfs(t, rootfs)
	tarball := filepath.Join(c.Dir, "image.tar")
	harness.OCIImageTar(t, rootfs, image, []string{"/bin/sleep", "100000"}, tarball)
	if _, err := c.Ctr(2*time.Minute, "images", "import", tarball); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	plugin := exec.CommandContext(ctx, imafsBin, "nri-plugin", "--socket", d.socket, "--nri-socket", c.NRISocket, "--log-level", "debug")
	pluginLog := &harness.SyncBuffer{}
	plugin.Stdout, plugin.Stderr = pluginLog, pluginLog
	if err := plugin.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); plugin.Wait() })
	time.Sleep(time.Second) // registration
	ids := map[string]string{}
	start := time.Now()
	for _, name := range []string{"one", "two"} {
		pod := writeJSON(t, c.Dir, "pod-"+name+".json", map[string]any{
			"metadata":      map[string]any{"name": "pod-" + name, "namespace": "default", "uid": "uid-" + name},
			"log_directory": filepath.Join(c.Dir, "logs", name),
			"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		})
		ctr := writeJSON(t, c.Dir, "ctr-"+name+".json", map[string]any{
			"metadata": map[string]any{"name": "ctr-" + name}, "image": map[string]any{"image": image},
			"command": []string{"/bin/sleep", "300"}, "log_path": "ctr.log",
		})
		podID := crictl(t, c, "runp", pod)
		id := crictl(t, c, "create", podID, ctr, pod)
		crictl(t, c, "start", id)
		ids[name] = id
		if _, ok := d.ps(t)[podID]; ok {
			t.Errorf("pod sandbox %s attached", podID)
		}
	}
	t.Logf("two pods created and started: %v", time.Since(start))
	rows := d.ps(t)
	if len(rows) != 3 {
		t.Fatalf("ps: %v, want the host and the two containers\nplugin:\n%s\ndaemon:\n%s", rows, pluginLog, d.logText())
	}
	for name, id := range ids {
		if _, ok := rows[id]; !ok {
			t.Fatalf("%s: CRI container %s not attached: %v", name, id, rows)
		}
		list := crictl(t, c, "exec", id, "cat", ima+"/ascii_runtime_measurements")
		oci := measured(list, "oci-config")
		if len(oci) != 1 {
			t.Fatalf("%s: oci-config entries %d:\n%s", name, len(oci), list)
		}
		cfg, _ := hex.DecodeString(strings.Fields(oci[0])[5])
		if !strings.Contains(string(cfg), `"ctr-`+name+`"`) || strings.Contains(string(cfg), `"ctr-`+other(name)+`"`) {
			t.Errorf("%s: its oci-config is not its own", name)
		}
		if len(measured(list, "/bin/busybox")) != 1 {
			t.Errorf("%s: exec not measured once:\n%s", name, list)
		}
	}
	host, err := os.ReadFile(filepath.Join(d.hostMnt, "ima/ascii_runtime_measurements"))
	if err != nil || len(measured(string(host), "oci-config")) != 2 {
		t.Errorf("host list: %v\n%s", err, host)
	}
	crictl(t, c, "stop", ids["one"])
	d.waitDetached(t, ids["one"])
	if _, ok := d.ps(t)[ids["two"]]; !ok {
		t.Error("stopping one detached two")
	}
	noWarnings(t, d)
}

func other(name string) string {
	if name == "one" {
		return "two"
	}
	return "one"
}

func crictl(t *testing.T, c *harness.Containerd, args ...string) string {
	t.Helper()
	out, err := c.Crictl(2*time.Minute, args...)
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
		t.Fatalf("%v\ncontainerd log tail:\n%s", err, tail(string(b), 3000))
	}
	if args[0] == "exec" {
		return out
	}
	return strings.TrimSpace(out)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, _ := json.Marshal(v)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
