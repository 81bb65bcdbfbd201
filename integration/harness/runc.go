package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Hook is an OCI hook entry of config.json.
type Hook struct {
	Path    string   `json:"path"`
	Args    []string `json:"args,omitempty"` // args[0] is the program name, as in execve
	Env     []string `json:"env,omitempty"`
	Timeout int      `json:"timeout,omitempty"` // seconds
}

// RuncOptions describe a runc container.
type RuncOptions struct {
	// Args is the container's process (default: sleep 3600).
	Args []string
	// User adds a user namespace mapping container 0..65535 to host
	// UserNSBase.. (root in the container is host uid 100000).
	User bool
	// Hostname of the container ("imafs-test" if empty).
	Hostname string
	// Capabilities are added to the process's bounding, effective,
	// permitted sets (e.g. "CAP_SYS_ADMIN"; runc's default spec has none of
	// the interesting ones).
	Capabilities []string
	// Hooks by OCI hook name: "createRuntime", "createContainer",
	// "startContainer", "prestart", "poststart", "poststop".
	Hooks map[string][]Hook
	// Rootfs is an existing root filesystem to use; empty: a fresh
	// BusyboxRootfs in the bundle.
	Rootfs string
	// Env is added to the process environment.
	Env []string
	// HostPID shares the host's pid namespace (no "pid" namespace in the
	// config): the case nsresolve can't anchor by pid namespace.
	HostPID bool
	// Edit, if set, may change the parsed config.json before it is written.
	Edit func(config map[string]any)
}

// RuncContainer is a container started with `runc run -d`.
type RuncContainer struct {
	ID     string // unique container id
	Bundle string // bundle directory (config.json, rootfs)
	Root   string // runc --root state directory (private to this container)
	Pid    int    // host pid of the container's init process
	Opts   RuncOptions

	t     testing.TB
	pidfd int
	once  sync.Once
}

var runcSeq atomic.Int64

// NewRuncContainer builds a bundle and starts it detached (`runc run -d
// --pid-file`, "terminal": false, stdio to a log file in the bundle).
// Kill+Delete and removal of the bundle are registered with t.Cleanup.
func NewRuncContainer(t testing.TB, opts RuncOptions) *RuncContainer {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "runc")
	if len(opts.Args) == 0 {
		opts.Args = []string{"sleep", "3600"}
	}
	if opts.Hostname == "" {
		opts.Hostname = "imafs-test"
	}
	// Not t.TempDir(): its parents are mode 0700, and a user-namespaced
	// container's root (host uid 100000) must be able to reach the rootfs.
	bundle, err := os.MkdirTemp("", "imafs-runc-")
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	os.Chmod(bundle, 0o755)
	c := &RuncContainer{
		ID:     fmt.Sprintf("imafs-test-%d-%d", os.Getpid(), runcSeq.Add(1)),
		Bundle: bundle,
		Root:   filepath.Join(bundle, "runc-state"),
		Opts:   opts,
		t:      t,
		pidfd:  -1,
	}
	t.Cleanup(func() {
		c.Delete()
		os.RemoveAll(bundle)
	})
	if err := c.writeConfig(); err != nil {
		t.Fatalf("harness: runc bundle: %v", err)
	}
	if err := c.run(); err != nil {
		t.Fatalf("harness: %v", err)
	}
	return c
}

func (c *RuncContainer) writeConfig() error {
	rootfs := c.Opts.Rootfs
	if rootfs == "" {
		rootfs = filepath.Join(c.Bundle, "rootfs")
		if err := os.Mkdir(rootfs, 0o755); err != nil {
			return err
		}
		BusyboxRootfs(c.t, rootfs)
	}
	if _, err := Run("runc", "spec", "--bundle", c.Bundle); err != nil {
		return err
	}
	path := filepath.Join(c.Bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = c.Opts.Args
	env, _ := proc["env"].([]any)
	for _, e := range c.Opts.Env {
		env = append(env, e)
	}
	proc["env"] = env
	if len(c.Opts.Capabilities) > 0 {
		caps := proc["capabilities"].(map[string]any)
		for _, set := range []string{"bounding", "effective", "permitted"} {
			list, _ := caps[set].([]any)
			for _, cp := range c.Opts.Capabilities {
				list = append(list, cp)
			}
			caps[set] = list
		}
	}
	cfg["root"] = map[string]any{"path": rootfs, "readonly": false}
	cfg["hostname"] = c.Opts.Hostname
	linux := cfg["linux"].(map[string]any)
	if c.Opts.HostPID {
		var keep []any
		for _, ns := range linux["namespaces"].([]any) {
			if ns.(map[string]any)["type"] != "pid" {
				keep = append(keep, ns)
			}
		}
		linux["namespaces"] = keep
	}
	if c.Opts.User {
		ns := linux["namespaces"].([]any)
		linux["namespaces"] = append(ns, map[string]any{"type": "user"})
		m := []any{map[string]any{"containerID": 0, "hostID": UserNSBase, "size": UserNSCount}}
		linux["uidMappings"], linux["gidMappings"] = m, m
		// A cgroup v1 mount is not allowed from a user namespace without a
		// cgroup namespace; drop it (tests don't need /sys/fs/cgroup).
		var mounts []any
		for _, mt := range cfg["mounts"].([]any) {
			if mt.(map[string]any)["type"] != "cgroup" {
				mounts = append(mounts, mt)
			}
		}
		cfg["mounts"] = mounts
	}
	if len(c.Opts.Hooks) > 0 {
		hooks := map[string]any{}
		for name, hs := range c.Opts.Hooks {
			hooks[name] = hs
		}
		cfg["hooks"] = hooks
	}
	if c.Opts.Edit != nil {
		c.Opts.Edit(cfg)
	}
	out, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// runc runs a runc command on this container's state root.
func (c *RuncContainer) runc(args ...string) (string, error) {
	return Run("runc", append([]string{"--root", c.Root}, args...)...)
}

func (c *RuncContainer) run() error {
	log, err := os.Create(filepath.Join(c.Bundle, "container.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	pidFile := filepath.Join(c.Bundle, "init.pid")
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "runc", "--root", c.Root, "run", "-d", "--bundle", c.Bundle, "--pid-file", pidFile, c.ID)
	// The container inherits these: files, never pipes.
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = log, log
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(log.Name())
		return fmt.Errorf("runc run -d %s: %w: %s", c.ID, err, b)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("runc run -d %s: %w", c.ID, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("runc pid file %q: %w", b, err)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open container init %d: %w", pid, err)
	}
	c.Pid, c.pidfd = pid, fd
	return nil
}

// Command returns an exec.Cmd that runs args in the container as uid:gid
// (gid = uid) through `runc exec`, bounded by ctx.
func (c *RuncContainer) Command(ctx context.Context, uid int, args ...string) *exec.Cmd {
	argv := []string{"--root", c.Root, "exec", "--user", fmt.Sprintf("%d:%d", uid, uid), c.ID}
	cmd := exec.CommandContext(ctx, "runc", append(argv, args...)...)
	cmd.WaitDelay = time.Second
	return cmd
}

// Exec runs args in the container as uid with DefaultTimeout and returns its
// stdout; a failure's error includes stderr.
func (c *RuncContainer) Exec(uid int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	return output(c.Command(ctx, uid, args...), "runc container "+c.ID)
}

// State returns `runc state` of the container as parsed JSON.
func (c *RuncContainer) State() (map[string]any, error) {
	out, err := c.runc("state", c.ID)
	if err != nil {
		return nil, err
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("runc state %s: %w", c.ID, err)
	}
	return st, nil
}

// Alive reports whether the container's init is still running.
func (c *RuncContainer) Alive() bool {
	if c.pidfd < 0 {
		return false
	}
	return !pidfdExited(c.pidfd, 0)
}

// Kill sends SIGKILL to the container (`runc kill`) and waits until its
// init has exited.
func (c *RuncContainer) Kill() error {
	if !c.Alive() {
		return nil
	}
	if _, err := c.runc("kill", c.ID, "KILL"); err != nil && c.Alive() {
		return err
	}
	if !pidfdExited(c.pidfd, DefaultTimeout) {
		return fmt.Errorf("runc container %s: init %d did not exit after SIGKILL", c.ID, c.Pid)
	}
	return nil
}

// Delete kills the container if needed and `runc delete --force`s it, which
// runs its poststop hooks. Safe to call more than once; registered with
// t.Cleanup.
func (c *RuncContainer) Delete() error {
	var err error
	c.once.Do(func() {
		if c.pidfd >= 0 {
			err = c.Kill()
		}
		if _, statErr := os.Stat(filepath.Join(c.Root, c.ID)); statErr == nil {
			_, derr := c.runc("delete", "--force", c.ID)
			err = errors.Join(err, derr)
		}
		if c.pidfd >= 0 {
			unix.Close(c.pidfd)
			c.pidfd = -1
		}
	})
	return err
}

// Spawn starts args in the container as uid with `runc exec --detach
// --pid-file` and returns its host pid. It is killed on cleanup (through a
// pidfd) unless it exited before.
func (c *RuncContainer) Spawn(t testing.TB, uid int, args ...string) int {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "spawn.pid")
	argv := []string{"--root", c.Root, "exec", "--detach", "--pid-file", pidFile, "--user", fmt.Sprintf("%d:%d", uid, uid), c.ID}
	// The detached process inherits runc's stdio: files, never pipes.
	logf, err := os.Create(filepath.Join(filepath.Dir(pidFile), "spawn.log"))
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "runc", append(argv, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(logf.Name())
		t.Fatalf("harness: runc exec --detach %q: %v: %s", args, err, out)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("harness: runc exec pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("harness: runc exec pid file %q: %v", b, err)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("harness: pidfd_open %d: %v", pid, err)
	}
	t.Cleanup(func() {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
	})
	return pid
}
