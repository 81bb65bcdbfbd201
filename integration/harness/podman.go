package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Podman is a rootful podman whose every path (storage --root, --runroot,
// --tmpdir, hooks directory) lives under one test directory; it runs
// containers with runc, cgroupfs and no network.
type Podman struct {
	Dir      string // everything podman writes
	HooksDir string // --hooks-dir (empty directory unless the test fills it)
	Driver   string // storage driver in use: overlay, or vfs when overlay fails
	t        testing.TB
}

// NewPodman prepares a podman under a TempDir and imports a busybox image
// as localhost/imafs-busybox:test. Cleanup removes every container, unmounts
// whatever podman left mounted under Dir and removes it.
func NewPodman(t testing.TB) *Podman {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "podman", "runc", "tar")
	p := &Podman{Dir: TempDir(t), t: t}
	p.HooksDir = filepath.Join(p.Dir, "hooks.d")
	if err := os.MkdirAll(p.HooksDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cleanup)
	_, tarball := BusyboxTar(t, p.Dir)
	var lastErr error
	for _, driver := range []string{"overlay", "vfs"} {
		p.Driver = driver
		if _, lastErr = p.Run(60*time.Second, "import", tarball, PodmanImage); lastErr == nil {
			return p
		}
		p.removeStorage()
	}
	t.Fatalf("podman import (overlay and vfs): %v", lastErr)
	return nil
}

// PodmanImage is the image NewPodman imports.
const PodmanImage = "localhost/imafs-busybox:test"

// Args are podman's global options for this instance.
func (p *Podman) Args() []string {
	return []string{
		"--root", filepath.Join(p.Dir, "root"), "--runroot", filepath.Join(p.Dir, "runroot"),
		"--tmpdir", filepath.Join(p.Dir, "tmp"), "--storage-driver", p.Driver,
		"--cgroup-manager", "cgroupfs", "--events-backend", "file",
		"--hooks-dir", p.HooksDir, "--runtime", "runc",
	}
}

// Command is `podman GLOBAL... ARGS...`.
func (p *Podman) Command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "podman", append(p.Args(), args...)...)
}

// Run runs podman with a timeout and returns its stdout.
func (p *Podman) Run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := p.Command(ctx, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out.String(), nil
}

// RunArgs are the `podman run` options these hosts need: runc (crun
// refuses the hybrid cgroups), explicit ulimits (podman's defaults exceed
// the sandbox's), no network.
func RunArgs() []string {
	return []string{"--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}
}

// Pid returns the host pid of a running container's init.
func (p *Podman) Pid(id string) (int, error) {
	out, err := p.Run(30*time.Second, "inspect", "--format", "{{.State.Pid}}", id)
	if err != nil {
		return 0, err
	}
	var pid int
	if _, err := fmt.Sscan(out, &pid); err != nil {
		return 0, fmt.Errorf("podman inspect %s: pid %q: %w", id, out, err)
	}
	return pid, nil
}

// ID returns a container's full id (the OCI id podman gives runc).
func (p *Podman) ID(name string) (string, error) {
	out, err := p.Run(30*time.Second, "inspect", "--format", "{{.Id}}", name)
	return strings.TrimSpace(out), err
}

// InstallHooks copies hooks.d JSON files into HooksDir, each with its
// hook's path set to bin and env appended (the shipped files' stages,
// "when" and args unchanged).
func (p *Podman) InstallHooks(t testing.TB, srcDir, bin string, env ...string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(srcDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("hooks in %s: %v (%d files)", srcDir, err, len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var hook map[string]any
		if err := json.Unmarshal(data, &hook); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		h, ok := hook["hook"].(map[string]any)
		if !ok {
			t.Fatalf("%s: no hook object", f)
		}
		h["path"] = bin
		if len(env) > 0 {
			h["env"] = env
		}
		out, _ := json.MarshalIndent(hook, "", "  ")
		if err := os.WriteFile(filepath.Join(p.HooksDir, filepath.Base(f)), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (p *Podman) cleanup() {
	p.Run(60*time.Second, "rm", "--all", "--force", "--time", "0")
	p.Run(60*time.Second, "rmi", "--all", "--force")
	p.removeStorage()
}

// removeStorage unmounts everything podman left under Dir (deepest first)
// and removes its storage directories.
func (p *Podman) removeStorage() {
	UnmountUnder(p.Dir)
	for _, d := range []string{"root", "runroot", "tmp"} {
		os.RemoveAll(filepath.Join(p.Dir, d))
	}
}

// UnmountUnder lazily unmounts every mount of ours below dir, deepest first.
func UnmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, m := range points {
		unix.Unmount(m, unix.MNT_DETACH)
	}
}

// BusyboxTar makes DIR/image-rootfs (BusyboxRootfs) and its tarball
// DIR/rootfs.tar, for an engine's image import.
func BusyboxTar(t testing.TB, dir string) (rootfs, tarball string) {
	t.Helper()
	RequireTools(t, "tar")
	rootfs = filepath.Join(dir, "image-rootfs")
	BusyboxRootfs(t, rootfs)
	tarball = filepath.Join(dir, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar rootfs: %v: %s", err, out)
	}
	return rootfs, tarball
}
