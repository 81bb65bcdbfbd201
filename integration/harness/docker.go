package harness

import (
	"bytes"
	"context"
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

// Debian's docker.io: the client is called by its full path (another
// build may be first in PATH).
const (
	DockerClient = "/usr/bin/docker"
	Dockerd      = "/usr/sbin/dockerd"
)

// Docker is a dockerd of its own: --data-root, --exec-root, the API socket,
// its pid file and log all under Dir; no iptables, no bridge; 1024 open
// files and processes by default.
type Docker struct {
	Dir    string
	Socket string
	Log    string
	pid    int
	t      testing.TB
}

// StartDocker starts dockerd with runtimes (daemon.json "runtimes": name →
// {"path", "runtimeArgs"}) and waits for its API. Cleanup removes the
// containers, stops dockerd (SIGTERM by pid, SIGKILL after 30 s, then its
// containerd by the pid file if it is left), unmounts what it left under Dir.
func StartDocker(t testing.TB, runtimes map[string]any) *Docker {
	t.Helper()
	RequireRoot(t)
	for _, bin := range []string{DockerClient, Dockerd} {
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("needs Debian's docker.io (%s)", bin)
		}
	}
	d := &Docker{Dir: TempDir(t), t: t}
	d.Socket = filepath.Join(d.Dir, "docker.sock")
	d.Log = filepath.Join(d.Dir, "dockerd.log")
	limit := func(name string) map[string]any { return map[string]any{"Name": name, "Hard": 1024, "Soft": 1024} }
	cfg, _ := json.Marshal(map[string]any{
		"default-ulimits": map[string]any{"nofile": limit("nofile"), "nproc": limit("nproc")},
		"runtimes":        runtimes,
	})
	cfgPath := filepath.Join(d.Dir, "daemon.json")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(Dockerd, "--config-file", cfgPath, "--data-root", filepath.Join(d.Dir, "data"),
		"--exec-root", filepath.Join(d.Dir, "exec"), "-H", "unix://"+d.Socket, "--pidfile", filepath.Join(d.Dir, "dockerd.pid"),
		"--iptables=false", "--ip6tables=false", "--bridge=none")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.pid = cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { d.stop(done) })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := d.Run(10*time.Second, "version"); err == nil {
			return d
		}
		select {
		case err := <-done:
			done <- err
			b, _ := os.ReadFile(d.Log)
			t.Fatalf("dockerd exited: %v\n%s", err, b)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(d.Log)
			t.Fatalf("dockerd not ready after 60s\n%s", b)
		}
	}
}

// Run runs `docker -H unix://SOCKET ARGS...` with a timeout; stdout.
func (d *Docker) Run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, DockerClient, append([]string{"-H", "unix://" + d.Socket}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out.String(), nil
}

// ImportBusybox imports a busybox root file system (BusyboxRootfs) as
// image and returns the rootfs directory it was made of.
func (d *Docker) ImportBusybox(t testing.TB, image string) string {
	t.Helper()
	rootfs, tarball := BusyboxTar(t, d.Dir)
	if _, err := d.Run(60*time.Second, "import", tarball, image); err != nil {
		t.Fatal(err)
	}
	return rootfs
}

func (d *Docker) stop(done chan error) {
	if out, err := d.Run(30*time.Second, "ps", "-aq"); err == nil && strings.TrimSpace(out) != "" {
		d.Run(60*time.Second, append([]string{"rm", "-f"}, strings.Fields(out)...)...)
	}
	containerd := readPid(filepath.Join(d.Dir, "exec/containerd/containerd.pid"))
	syscall.Kill(d.pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		syscall.Kill(d.pid, syscall.SIGKILL)
		<-done
	}
	if containerd > 0 && processAlive(containerd) {
		syscall.Kill(containerd, syscall.SIGKILL)
	}
	UnmountUnder(d.Dir)
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// processAlive: pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
