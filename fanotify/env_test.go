package fanotify_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// Tests here use real fanotify permission marks, only on file systems the
// test mounts itself: each container gets a tmpfs mounted inside its own
// mount namespace (a filesystem mark), and a shared tmpfs the test mounts in
// the host namespace under its temp dir is bind-mounted into containers
// (mount marks on the containers' mounts only).

func needEnv(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (fanotify permission events, namespaces, mounts)")
	}
	for _, tool := range []string{"unshare", "nsenter", "busybox", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	if bb, _ := exec.LookPath("busybox"); bb != "" {
		if out, _ := exec.Command("file", "-L", bb).Output(); bytes.Contains(out, []byte("dynamically")) {
			t.Skip("needs a static busybox (busybox-static)")
		}
	}
}

// env is a registry with an engine, as the daemon wires them.
type env struct {
	t      *testing.T
	dir    string
	reg    *imans.Registry
	eng    *fanotify.Engine
	logs   *logtest.Hook // every record the engine logs
	keys   string
	shared string // tmpfs in the host namespace, bind-mounted into containers
}

func newEnv(t *testing.T, opts fanotify.Options) *env {
	t.Helper()
	needEnv(t)
	dir := t.TempDir()
	log := logrus.New()
	log.SetLevel(logrus.InfoLevel)
	if !testing.Verbose() {
		log.SetOutput(io.Discard)
	}
	hook := logtest.NewLocal(log)
	reg, err := imans.NewRegistry(imans.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, reg: reg, logs: hook, keys: filepath.Join(dir, "keys"), shared: filepath.Join(dir, "shared")}
	if err := os.MkdirAll(e.shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("imafs-test-shared", e.shared, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatalf("mount shared tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(e.shared, 0); err != nil {
			unix.Unmount(e.shared, unix.MNT_DETACH)
		}
	})
	opts.Registry, opts.Log, opts.KeyDir = reg, log, e.keys
	if opts.Timeout == 0 {
		opts.Timeout = 20 * time.Second
	}
	eng, err := fanotify.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.eng = eng
	t.Cleanup(func() {
		eng.Close()
		reg.Close()
	})
	return e
}

// container is an `unshare --pid --fork --mount` process chrooted into a
// tmpfs mounted in its own mount namespace, with busybox copies in /bin and
// the env's shared tmpfs at /shared.
type container struct {
	env  *env
	id   string
	root string // host path of the root (inside the container's mount ns)
	pid  int    // host pid of its init
	ns   *imans.Namespace
	cmd  *exec.Cmd
}

func (e *env) container(id string, bins ...string) *container {
	e.t.Helper()
	return e.containerOn(id, "tmpfs", bins...)
}

// containerOn is container with its root on a fresh file system of fstype:
// "tmpfs", or "ext4" (an image in the test's temp dir, loop-mounted inside
// the container's mount namespace; the loop device is freed with it).
func (e *env) containerOn(id, fstype string, bins ...string) *container {
	t := e.t
	t.Helper()
	root := filepath.Join(e.dir, id)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	mountCmd := fmt.Sprintf("mount -t tmpfs -o size=256m imafs-test-%s %s", id, root)
	if fstype == "ext4" {
		for _, tool := range []string{"mkfs.ext4", "losetup"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("needs %s", tool)
			}
		}
		img := filepath.Join(e.dir, id+".ext4")
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "^has_journal", img, "96M").CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v\n%s", err, out)
		}
		mountCmd = fmt.Sprintf("mount -t ext4 -o loop %s %s", img, root)
	}
	bb, _ := exec.LookPath("busybox")
	script := fmt.Sprintf(`set -e
%[6]s
mkdir %[2]s/bin %[2]s/shared %[2]s/tmp %[2]s/dev
mknod -m 666 %[2]s/dev/null c 1 3
mount --bind %[3]s %[2]s/shared
for b in %[5]s; do cp %[4]s %[2]s/bin/$b; done
exec chroot %[2]s /bin/sleep 600`, id, root, e.shared, bb, strings.Join(append([]string{"sleep", "sh"}, bins...), " "), mountCmd)
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "sh", "-c", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &container{env: e, id: id, root: root, cmd: cmd}
	t.Cleanup(c.stop)
	deadline := time.Now().Add(10 * time.Second)
	for c.pid == 0 || !c.chrooted() {
		if time.Now().After(deadline) {
			t.Fatalf("container %s did not start: %s", id, stderr.String())
		}
		if c.pid == 0 {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
			if f := strings.Fields(string(b)); len(f) > 0 {
				c.pid, _ = strconv.Atoi(f[0])
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	ns, err := e.reg.Attach(id, c.pid, nil)
	if err != nil {
		t.Fatalf("attach %s: %v", id, err)
	}
	c.ns = ns
	return c
}

func (c *container) chrooted() bool {
	r, err := os.Readlink(fmt.Sprintf("/proc/%d/root", c.pid))
	if err != nil || r != c.root {
		return false
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.pid))
	return strings.TrimSpace(string(b)) == "sleep"
}

func (c *container) stop() {
	if c.cmd.Process != nil {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
}

// path is the host path of a file in the container (through /proc/PID/root).
func (c *container) path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", c.pid, p)
}

// setPolicy loads rules into the container's policy (as its root would
// through the policy file) and lets the engine see it.
func (c *container) setPolicy(rules string) {
	c.env.t.Helper()
	p, err := policy.Parse(rules)
	if err != nil {
		c.env.t.Fatal(err)
	}
	if err := c.ns.LoadPolicy(p); err != nil {
		c.env.t.Fatal(err)
	}
	if err := c.env.eng.Sync(c.ns); err != nil {
		c.env.t.Fatalf("sync: %v", err)
	}
}

// exec runs argv inside the container (its pid, mount ns and root) and
// returns the combined output and error (killed after 30s). Safe to call
// from any goroutine.
func (c *container) exec(argv ...string) (string, error) {
	args := append([]string{"-t", strconv.Itoa(c.pid), "-p", "-m", "-r", "--"}, argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Dir = "/"
	done := make(chan struct{})
	timer := time.AfterFunc(30*time.Second, func() {
		if cmd.Process != nil {
			cmd.Process.Kill()
		}
		close(done)
	})
	defer timer.Stop()
	out, err := cmd.CombinedOutput()
	select {
	case <-done:
		return string(out), fmt.Errorf("exec %v in %s: timed out (killed)", argv, c.id)
	default:
	}
	return string(out), err
}

func (c *container) mustExec(argv ...string) {
	c.env.t.Helper()
	if out, err := c.exec(argv...); err != nil {
		c.env.t.Fatalf("exec %v in %s: %v\n%s", argv, c.id, err, out)
	}
}

// entries returns the list's (name, file digest) pairs after boot_aggregate.
func entries(l *measurelog.List) []*measurelog.Entry {
	var out []*measurelog.Entry
	for i := 0; i < l.Len(); i++ {
		out = append(out, l.Entry(i))
	}
	return out
}

// named returns the entries of l named name.
func named(l *measurelog.List, name string) []*measurelog.Entry {
	var out []*measurelog.Entry
	for _, e := range entries(l) {
		if e.Name() == name && !e.Violation {
			out = append(out, e)
		}
	}
	return out
}

// sha256sum runs coreutils' sha256sum on a host path.
func sha256sum(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		t.Fatalf("sha256sum %s: %v", path, err)
	}
	return strings.Fields(string(out))[0]
}

func fileDigest(t *testing.T, e *measurelog.Entry) string {
	t.Helper()
	algo, d, err := e.FileDigest()
	if err != nil {
		t.Fatal(err)
	}
	if algo != "sha256" {
		t.Fatalf("entry %s: algo %s", e.Name(), algo)
	}
	return fmt.Sprintf("%x", d)
}

// appendTo changes a file (a static ELF still runs with bytes appended).
func appendTo(t *testing.T, path string, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(f, data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}
