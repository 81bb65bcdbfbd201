// Package integration holds imafs's end-to-end tests: the real imafs binary
// serving real containers (runc with the OCI hook, unshare), run as root.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// imafsBin is the imafs binary built once by TestMain ("" when it could not
// be built: tests skip).
var imafsBin string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // every test skips
		}
		dir, err := os.MkdirTemp("", "imafs-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		bin := filepath.Join(dir, "imafs")
		gobin := "go"
		if _, err := exec.LookPath(gobin); err != nil {
			gobin = "/usr/local/go/bin/go"
		}
		cmd := exec.Command(gobin, "build", "-o", bin, "github.com/imafs/imafs/cmd/imafs")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build imafs: %v\n%s", err, out)
			return 1
		}
		imafsBin = bin
		return m.Run()
	}()
	os.Exit(code)
}

// ima is where a container sees its tree.
const ima = "/sys/kernel/security/ima"

// daemon is a running `imafs serve`.
type daemon struct {
	t       *testing.T
	socket  string
	state   string
	hostMnt string // host view mount
	cmd     *exec.Cmd
	log     string
	done    chan error
}

func needDaemon(t *testing.T) {
	t.Helper()
	harness.RequireRoot(t)
	if imafsBin == "" {
		t.Skip("imafs binary not built")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// startDaemon runs `imafs serve` with a private socket, state dir and host
// mount; Cleanup stops it with SIGTERM and checks it exits 0.
func startDaemon(t *testing.T, extra ...string) *daemon {
	t.Helper()
	needDaemon(t)
	dir, err := os.MkdirTemp("", "imafs-daemon-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &daemon{
		t:       t,
		socket:  filepath.Join(dir, "imafs.sock"),
		state:   filepath.Join(dir, "state"),
		hostMnt: filepath.Join(dir, "host"),
		log:     filepath.Join(dir, "daemon.log"),
		done:    make(chan error, 1),
	}
	if err := os.Mkdir(d.hostMnt, 0o755); err != nil {
		t.Fatal(err)
	}
	d.launch(10*time.Second, extra...)
	return d
}

// launch starts `imafs serve` on d's socket, state directory and host mount,
// logging to d.log; it returns once the daemon answers, and Cleanup stops it.
func (d *daemon) launch(readyTimeout time.Duration, extra ...string) {
	t := d.t
	t.Helper()
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := append([]string{"serve", "--socket", d.socket, "--state-dir", d.state, "--mount", d.hostMnt, "--log-level", "debug"}, sourceDefaults(extra)...)
	d.cmd = exec.Command(imafsBin, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(d.stop)
	for deadline := time.Now().Add(readyTimeout); ; time.Sleep(20 * time.Millisecond) {
		if _, err := d.imafs("ps"); err == nil {
			return
		}
		select {
		case err := <-d.done:
			b, _ := os.ReadFile(d.log)
			t.Fatalf("imafs serve %v exited: %v\n%s", extra, err, b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(d.log)
			t.Fatalf("imafs serve %v not ready after %v\n%s", extra, readyTimeout, b)
		}
	}
}

// sourceDefaults returns serve's extra arguments with the measurement
// sources off unless the test names them: `imafs serve` runs the fanotify
// engine and the mmap source by default, and most containers of these tests
// have their rootfs on the host's root file system, where a test must not
// put fanotify permission marks (the fanotify and mmap tests mount a tmpfs
// rootfs and ask for the sources, or leave them at their defaults with
// --fanotify=auto).
func sourceDefaults(extra []string) []string {
	fan, mmap := false, false
	for _, a := range extra {
		a = strings.TrimLeft(a, "-")
		fan = fan || a == "fanotify" || strings.HasPrefix(a, "fanotify=")
		mmap = mmap || a == "mmap" || strings.HasPrefix(a, "mmap=")
	}
	out := append([]string(nil), extra...)
	if !fan {
		out = append(out, "--fanotify=false")
	}
	if !mmap && !fan {
		out = append(out, "--mmap=off")
	}
	return out
}

func (d *daemon) stop() {
	if d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			b, _ := os.ReadFile(d.log)
			d.t.Errorf("imafs serve: %v after SIGTERM\n%s", err, b)
		}
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		d.t.Error("imafs serve did not stop after SIGTERM")
	}
	syscall.Unmount(d.hostMnt, syscall.MNT_DETACH)
	if d.t.Failed() {
		b, _ := os.ReadFile(d.log)
		d.t.Logf("daemon log:\n%s", b)
	}
}

// imafs runs a client command against d: `imafs SUB --socket S ARGS...`.
func (d *daemon) imafs(sub string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, imafsBin, append([]string{sub, "--socket", d.socket}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("imafs %s %v: %w: %s", sub, args, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// nsInfo is one row of `imafs ps --json`.
type nsInfo struct {
	ID          string `json:"id"`
	Pid         int    `json:"pid"`
	Namespace   string `json:"namespace"`
	Entries     int    `json:"entries"`
	Violations  int64  `json:"violations"`
	Rules       int    `json:"rules"`
	PCR10SHA1   string `json:"pcr10_sha1"`
	PCR10SHA256 string `json:"pcr10_sha256"`
	Degraded    string `json:"degraded"`
}

func (d *daemon) ps(t *testing.T) map[string]nsInfo {
	t.Helper()
	out, err := d.imafs("ps", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []nsInfo
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("ps --json: %v: %q", err, out)
	}
	m := map[string]nsInfo{}
	for _, r := range rows {
		m[r.ID] = r
	}
	return m
}

// waitDetached waits until id is no longer attached.
func (d *daemon) waitDetached(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok := d.ps(t)[id]; !ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("%s still attached", id)
}

// lines splits an ascii list into lines (without the final newline).
func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// names returns the name field (5th token) of each ascii line.
func names(list string) []string {
	var out []string
	for _, l := range lines(list) {
		f := strings.Fields(l)
		if len(f) >= 5 {
			out = append(out, f[4])
		}
	}
	return out
}
