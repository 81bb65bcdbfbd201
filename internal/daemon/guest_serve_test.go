package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
)

// The whole daemon in the BPF LSM kernel's QEMU guest (TestGuestServe in
// guest_serve_checks_test.go): the real `imafs serve` binary, packed into
// the initramfs by kernel-patches/test/run-bpf as /bin/imafs, serving
// containers whose root is a tmpfs with a glibc userland (the guest's
// /glibc: Debian's env and ls, the harness's mapper, the marker library of
// kernel-patches/test/guest/preload-marker.c and every library ldd lists).

const (
	serveBin  = "/bin/imafs" // IMAFS_GUEST_IMAFS overrides
	glibcTree = "/glibc"
	serveDir  = "/tmp/serve"
	imaDir    = "/sys/kernel/security/ima"
	markerLib = "/usr/lib/libimafs-marker.so"
	dlopenLib = "/usr/lib/libimafs-dl.so"
)

// serveWorkloadCmd runs the container commands the whole-daemon test adds
// to TestGuestDaemonWorkload's: root DIR (the tmpfs on DIR becomes the
// root of the mount namespace, as switch_root does: the initramfs cannot be
// pivot_root'ed), write PATH QUOTED (one write(2) of the Go-quoted text),
// read PATH (answer "ok QUOTED"), exec JSON (a guestExec; answer "ok JSON"
// of a guestExecResult). ok is false for an unknown command.
func serveWorkloadCmd(cmd, arg string) (answer string, ok bool) {
	var err error
	out := "ok"
	switch cmd {
	case "root":
		err = switchRoot(arg)
	case "write":
		path, q, _ := strings.Cut(arg, " ")
		var text string
		if text, err = strconv.Unquote(q); err == nil {
			err = writeOnce(path, text)
		}
	case "read":
		var b []byte
		if b, err = os.ReadFile(arg); err == nil {
			out = "ok " + strconv.Quote(string(b))
		}
	case "exec":
		var x guestExec
		if err = json.Unmarshal([]byte(arg), &x); err == nil {
			b, _ := json.Marshal(x.run())
			out = "ok " + string(b)
		}
	default:
		return "", false
	}
	if err != nil {
		return errAnswer(err), true
	}
	return out, true
}

func errAnswer(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return "err " + unix.ErrnoName(errno)
	}
	return "err " + err.Error()
}

func switchRoot(dir string) error {
	if err := os.Chdir(dir); err != nil {
		return err
	}
	if err := unix.Mount(dir, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", dir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	return os.Chdir("/")
}

func writeOnce(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(text)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// guestExec is a program the container runs and waits for. With Until,
// its stdin stays open (the mapper keeps its mappings) until the
// container's list names Until, or 10 s.
type guestExec struct {
	Args  []string `json:"args"`
	Env   []string `json:"env"`
	Stdin string   `json:"stdin"`
	Until string   `json:"until,omitempty"`
}

// guestExecResult is its combined output and exit status (-1: not run).
type guestExecResult struct {
	Out    string `json:"out"`
	Status int    `json:"status"`
}

func (x guestExec) run() guestExecResult {
	cmd := exec.Command(x.Args[0], x.Args[1:]...)
	cmd.Env = x.Env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	in, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err == nil {
		in.Write([]byte(x.Stdin))
		for deadline := time.Now().Add(10 * time.Second); x.Until != "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if b, _ := os.ReadFile(imaDir + "/ascii_runtime_measurements"); bytes.Contains(b, []byte(" "+x.Until+"\n")) {
				break
			}
		}
		in.Close()
		err = cmd.Wait()
	}
	r := guestExecResult{Out: out.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Status = ee.ExitCode()
	case err != nil:
		r.Status, r.Out = -1, r.Out+err.Error()
	}
	return r
}

// serveDaemon is a running `imafs serve`.
type serveDaemon struct {
	bin, socket, log string
	cmd              *exec.Cmd
	done             chan error
}

// startServe runs `imafs serve` with its state on the guest's /tmp
// (tmpfs), the fanotify engine and the mmap source on (--mmap on: a BPF
// program that does not load is fatal), logging JSON to serveDir/daemon.log;
// it returns once the control socket answers. Cleanup stops it (SIGTERM).
func startServe(t *testing.T) *serveDaemon {
	t.Helper()
	bin := serveBin
	if b := os.Getenv("IMAFS_GUEST_IMAFS"); b != "" {
		bin = b
	}
	for _, d := range []string{serveDir + "/host", serveDir + "/keys"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d := &serveDaemon{bin: bin, socket: serveDir + "/imafs.sock", log: serveDir + "/daemon.log", done: make(chan error, 1)}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(bin, "serve", "--socket", d.socket, "--state-dir", serveDir+"/state",
		"--mount", serveDir+"/host", "--log-level", "debug", "--log-format", "json",
		"--fanotify=true", "--mmap", "on", "--kernel-source", "off", "--fanotify-keys", serveDir+"/keys")
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	for deadline := time.Now().Add(harness.DefaultTimeout); ; time.Sleep(50 * time.Millisecond) {
		if _, err := d.imafs("ps"); err == nil {
			return d
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("imafs serve exited: %v\n%s", err, d.tail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("imafs serve not ready after %v\n%s", harness.DefaultTimeout, d.tail())
		}
	}
}

func (d *serveDaemon) tail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// stop ends the daemon with SIGTERM; it must exit 0 within 15 s.
func (d *serveDaemon) stop(t *testing.T) {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		gktest(t, err == nil, "serve: imafs serve exits 0 on SIGTERM: %v", err)
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		gktest(t, false, "serve: imafs serve did not stop within 15 s of SIGTERM")
	}
	if t.Failed() {
		fmt.Printf("daemon log (tail):\n%s\n", d.tail())
	}
}

// imafs runs a client command: `imafs SUB --socket S ARGS...`.
func (d *serveDaemon) imafs(sub string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, append([]string{sub, "--socket", d.socket}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("imafs %s %v: %w: %s", sub, args, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// logged waits up to wait for a JSON log line with msg and every field of
// want (values compared as text).
func (d *serveDaemon) logged(msg string, want map[string]string, wait time.Duration) bool {
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		for _, e := range d.entries(msg) {
			match := true
			for k, v := range want {
				match = match && e[k] == v
			}
			if match {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// entries returns the daemon's JSON log lines with msg, fields as text.
func (d *serveDaemon) entries(msg string) []map[string]string {
	b, _ := os.ReadFile(d.log)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []map[string]string
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil || e["msg"] != msg {
			continue
		}
		m := map[string]string{}
		for k, v := range e {
			m[k] = fmt.Sprint(v)
		}
		out = append(out, m)
	}
	return out
}

// serveContainer is a container of the whole-daemon test: a workload in
// new pid and mount namespaces whose root is a tmpfs holding the glibc
// userland, attached with `imafs attach`.
type serveContainer struct {
	*guestContainer
	id    string
	files []string // the userland's regular files, as the container sees them
}

// startServeContainer makes the container's root: a tmpfs on dir, the
// guest's glibc userland copied in (with a good security.ima hash on each
// file when hashed), the mount point of its IMA tree; then attaches it and
// waits until the fanotify engine watches it and the FUSE tree answers.
func startServeContainer(t *testing.T, d *serveDaemon, id, dir string, hashed bool) *serveContainer {
	t.Helper()
	c := &serveContainer{guestContainer: startGuestContainer(t), id: id}
	if got := c.do(t, "mount "+dir); got != "ok" {
		t.Fatalf("%s: mount %s: %s", id, dir, got)
	}
	root := fmt.Sprintf("/proc/%d/root%s", c.Pid, dir)
	c.files = copyTree(t, glibcTree, root, hashed)
	for _, p := range []string{"sys/kernel/security", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.do(t, "root "+dir); got != "ok" {
		t.Fatalf("%s: root %s: %s", id, dir, got)
	}
	out, err := d.imafs("attach", "--pid", strconv.Itoa(c.Pid), "--id", id)
	if err != nil || !strings.Contains(out, "attached "+id) {
		t.Fatalf("attach %s: %q %v\n%s", id, out, err, d.tail())
	}
	if !d.logged("fanotify: watching container", map[string]string{"id": id}, harness.DefaultTimeout) {
		t.Fatalf("%s: the fanotify engine does not watch it\n%s", id, d.tail())
	}
	for deadline := time.Now().Add(harness.DefaultTimeout); ; time.Sleep(50 * time.Millisecond) {
		got := c.do(t, "read "+imaDir+"/policy")
		if strings.HasPrefix(got, "ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: its FUSE tree does not answer: %s", id, got)
		}
	}
	return c
}

// copyTree copies src (regular files and symbolic links) to dst and
// returns the regular files' paths below dst ("/usr/bin/ls").
func copyTree(t *testing.T, src, dst string, hashed bool) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case e.IsDir():
			return os.MkdirAll(to, 0o755)
		case e.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, to)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(to, data, 0o755); err != nil {
			return err
		}
		files = append(files, "/"+rel)
		if hashed {
			return unix.Setxattr(to, "security.ima", imaHash(data), 0)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
	return files
}

// host returns where the test reads the container's file p.
func (c *serveContainer) host(p string) string { return fmt.Sprintf("/proc/%d/root%s", c.Pid, p) }

// policy writes text to the container's IMA policy file, from inside.
func (c *serveContainer) policy(t *testing.T, text string) {
	t.Helper()
	got := c.do(t, "write "+imaDir+"/policy "+strconv.Quote(text))
	gktest(t, got == "ok", "serve: %s loads %q through its FUSE policy file: %s", c.id, text, got)
}

// run runs a program in the container.
func (c *serveContainer) run(t *testing.T, env []string, stdin string, args ...string) guestExecResult {
	t.Helper()
	return c.runX(t, guestExec{Args: args, Env: env, Stdin: stdin})
}

func (c *serveContainer) runX(t *testing.T, x guestExec) guestExecResult {
	t.Helper()
	b, _ := json.Marshal(x)
	got := c.do(t, "exec "+string(b))
	var r guestExecResult
	if q, ok := strings.CutPrefix(got, "ok "); !ok || json.Unmarshal([]byte(q), &r) != nil {
		t.Fatalf("%s: exec %v: %s", c.id, x.Args, got)
	}
	return r
}

// listText reads the container's ascii_runtime_measurements through its
// FUSE tree, from inside.
func (c *serveContainer) listText(t *testing.T) string {
	t.Helper()
	got := c.do(t, "read "+imaDir+"/ascii_runtime_measurements")
	q, ok := strings.CutPrefix(got, "ok ")
	text, err := strconv.Unquote(q)
	if !ok || err != nil {
		t.Fatalf("%s: read its list: %s", c.id, got)
	}
	return text
}

// list is listText as path → digests ("sha256:HEX"), in list order.
func (c *serveContainer) list(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, line := range strings.Split(c.listText(t), "\n") {
		if f := strings.SplitN(line, " ", 5); len(f) == 5 {
			out[f[4]] = append(out[f[4]], f[3])
		}
	}
	return out
}

// marked reports whether the container's file p exists, and removes it.
func (c *serveContainer) marked(p string) bool {
	err := os.Remove(c.host(p))
	return err == nil
}
