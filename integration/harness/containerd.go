package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EngineBinDir is where containerd, containerd-shim-runc-v2, ctr and crictl
// are looked for: $IMAFS_ENGINE_BIN, else /root/.cache/imafs-engines/bin
// (scripts/build-engines puts them there).
func EngineBinDir() string {
	if d := os.Getenv("IMAFS_ENGINE_BIN"); d != "" {
		return d
	}
	return "/root/.cache/imafs-engines/bin"
}

// Containerd is a containerd 2.x of its own: root, state, sockets, runc's
// root, NRI's socket and every log under Dir; /run is a private tmpfs in
// its mount namespace (the shims' sockets go to /run/containerd/s).
type Containerd struct {
	Dir       string
	Socket    string
	NRISocket string
	bin       string
	pid       int
	done      chan error
}

// StartContainerd starts containerd (CRI with restrict_oom_score_adj, NRI
// on, sandbox image = image) and waits for its socket.
func StartContainerd(t testing.TB, sandboxImage string) *Containerd {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "unshare", "runc")
	bin := EngineBinDir()
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "crictl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Skipf("needs %s in %s (scripts/build-engines)", b, bin)
		}
	}
	runc, _ := exec.LookPath("runc")
	c := &Containerd{Dir: TempDir(t), bin: bin, done: make(chan error, 1)}
	c.Socket = filepath.Join(c.Dir, "containerd.sock")
	c.NRISocket = filepath.Join(c.Dir, "nri.sock")
	cfg := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[5]q
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = %[6]q
      Root = %[7]q
[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = %[8]q
  plugin_path = %[9]q
  plugin_config_path = %[9]q
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
`, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.Socket, c.Socket+".ttrpc",
		sandboxImage, runc, filepath.Join(c.Dir, "runc"), c.NRISocket, filepath.Join(c.Dir, "nri-plugins"))
	cfgPath := filepath.Join(c.Dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(c.Dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// A private mount namespace whose /run is a fresh tmpfs.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o mode=755 imafs-test-run /run && exec "$@"`, "sh",
		filepath.Join(bin, "containerd"), "--config", cfgPath)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.pid = cmd.Process.Pid
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(c.stop)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := c.Ctr(10*time.Second, "version"); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
			t.Fatalf("containerd not ready after 60s\n%s", b)
		}
	}
}

func (c *Containerd) run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out.String(), nil
}

// Ctr runs `ctr --address SOCKET -n k8s.io ARGS...`.
func (c *Containerd) Ctr(timeout time.Duration, args ...string) (string, error) {
	return c.run(timeout, "ctr", append([]string{"--address", c.Socket, "-n", "k8s.io"}, args...)...)
}

// Crictl runs `crictl -r unix://SOCKET ARGS...`.
func (c *Containerd) Crictl(timeout time.Duration, args ...string) (string, error) {
	ep := "unix://" + c.Socket
	return c.run(timeout, "crictl", append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s"}, args...)...)
}

func (c *Containerd) stop() {
	if out, err := c.Crictl(30*time.Second, "pods", "-q"); err == nil {
		for _, p := range strings.Fields(out) {
			c.Crictl(30*time.Second, "stopp", p)
			c.Crictl(30*time.Second, "rmp", "-f", p)
		}
	}
	syscall.Kill(c.pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		syscall.Kill(c.pid, syscall.SIGKILL)
		<-c.done
	}
	// Shims left over (they outlive containerd by design): ours are those
	// started with our socket's address.
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cl, []byte("containerd-shim")) && bytes.Contains(cl, []byte(c.Socket)) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	UnmountUnder(c.Dir)
}

// OCIImageTar writes an OCI image layout tarball of rootfs to path: one
// layer, config with Cmd, named name (org.opencontainers.image.ref.name and
// the containerd image name annotation), for `ctr images import`.
func OCIImageTar(t testing.TB, rootfs, name string, cmd []string, path string) {
	t.Helper()
	dir := filepath.Join(filepath.Dir(path), "oci-layout")
	blobs := filepath.Join(dir, "blobs/sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(dir, "layer.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "-cf", layer, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	ld, err := os.ReadFile(layer)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(layer)
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(blobs, h), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + h, len(b)
	}
	layerDigest, layerSize := put(ld)
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": cmd, "Env": []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	configDigest, configSize := put(config)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	manifestDigest, manifestSize := put(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
			"annotations": map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
		}},
	})
	os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	if out, err := exec.Command("tar", "-C", dir, "-cf", path, "index.json", "oci-layout", "blobs").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
}
