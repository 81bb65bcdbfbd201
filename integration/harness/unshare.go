package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// UnshareOptions describe an unshare container.
type UnshareOptions struct {
	// Args is the container's init command (default: sleep 3600). It runs as
	// pid 1 of a new pid namespace, with a private mount namespace and a
	// fresh /proc.
	Args []string
	// User puts the container in a new user namespace that maps container
	// uid/gid 0..65535 to host UserNSBase.. (container root is host 100000).
	// Not supported for nested containers.
	User bool
	// Root chroots the container into this directory (a BusyboxRootfs);
	// for a nested container the path is as the parent container sees it.
	// Empty: the parent's root.
	Root string
	// Hostname gives the container a new UTS namespace with this hostname.
	Hostname string
	// Net gives the container a new (empty) network namespace; a
	// user-namespaced container needs one to mount sysfs.
	Net bool
}

// Unshare is a running unshare container.
type Unshare struct {
	Pid    int            // host pid of the container's init (pid 1 inside)
	Opts   UnshareOptions // as started
	Parent *Unshare       // the container this one is nested in, or nil

	t      testing.TB
	cmd    *exec.Cmd // unshare (or nsenter for nested/user containers)
	waited chan struct{}
	holder *exec.Cmd // holds the user namespace while its maps are written
	pidfd  int
	log    string
	once   sync.Once
}

// StartUnshare starts an unshare container on the host and registers its
// Kill with t.Cleanup.
func StartUnshare(t testing.TB, opts UnshareOptions) *Unshare {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "unshare", "nsenter", "sh")
	return start(t, opts, nil)
}

// Nested starts an unshare container inside u (its pid, mount, user, ...
// namespaces, and root), so its pid namespace is a child of u's. The tools
// it needs (unshare, sh, chroot, mount) are u's: the host's, or busybox's in
// a BusyboxRootfs.
func (u *Unshare) Nested(t testing.TB, opts UnshareOptions) *Unshare {
	t.Helper()
	if opts.User {
		t.Fatal("harness: nested user namespaces are not supported")
	}
	return start(t, opts, u)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func start(t testing.TB, opts UnshareOptions, parent *Unshare) *Unshare {
	t.Helper()
	if len(opts.Args) == 0 {
		opts.Args = []string{"sleep", "3600"}
	}
	if opts.User && opts.Root != "" {
		checkTraversable(t, opts.Root)
	}
	u := &Unshare{Opts: opts, Parent: parent, t: t, pidfd: -1, waited: make(chan struct{})}
	u.log = filepath.Join(t.TempDir(), "init.log")
	logf, err := os.Create(u.log)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	defer logf.Close()
	t.Cleanup(u.Kill)

	// The script runs as pid 1 (after unshare's fork); it says "ready" once
	// /proc, root and hostname are set up, then becomes Args.
	inner := ""
	if opts.Hostname != "" {
		inner += "hostname " + shellQuote(opts.Hostname) + " && "
	}
	inner += `echo ready && exec "$@"`
	// --mount-proc only where util-linux's unshare runs at the host's root:
	// busybox's (nested containers use the parent's tools) first makes "/"
	// private with mount("none", "/"), which fails with EINVAL when "/" is
	// not a mount point (a chroot directory).
	mountProc := parent == nil && opts.Root == ""
	script := inner
	if opts.Root != "" {
		// Bind the root onto itself so that "/" is a mount point inside,
		// as in a real container, then chroot and mount a fresh /proc.
		script = "mount --bind " + shellQuote(opts.Root) + " " + shellQuote(opts.Root) +
			" && exec chroot " + shellQuote(opts.Root) + " /bin/sh -c " +
			shellQuote("mount -t proc proc /proc && "+inner) + ` sh "$@"`
	} else if !mountProc {
		script = "mount -t proc proc /proc && " + inner
	}
	// Both unshares make the new mount namespace's mounts private by
	// default. (busybox's "--propagation unchanged" is broken: it calls
	// mount("none", "/", 0) and fails with EINVAL.)
	argv := []string{"unshare", "-p", "-f", "-m"}
	if opts.Hostname != "" {
		argv = append(argv, "-u")
	}
	if opts.Net {
		argv = append(argv, "-n")
	}
	if mountProc {
		argv = append(argv, "--mount-proc")
	}
	if parent == nil {
		argv = append(argv, "--kill-child")
	}
	argv = append(argv, "sh", "-c", script, "sh")
	argv = append(argv, opts.Args...)

	switch {
	case parent != nil:
		argv = append([]string{"nsenter", "-t", strconv.Itoa(parent.Pid), "-a", "-r", "-w", "--"}, argv...)
	case opts.User:
		h, err := userNSHolder()
		if err != nil {
			t.Fatalf("harness: %v", err)
		}
		u.holder = h
		argv = append([]string{"nsenter", "--user=/proc/" + strconv.Itoa(h.Process.Pid) + "/ns/user", "-S", "0", "-G", "0", "--"}, argv...)
	}
	u.cmd = exec.Command(argv[0], argv[1:]...)
	u.cmd.Stdout, u.cmd.Stderr = logf, logf
	u.cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if err := u.cmd.Start(); err != nil {
		t.Fatalf("harness: start %v: %v", argv, err)
	}
	go func() { u.cmd.Wait(); close(u.waited) }()

	err = waitFor("unshare container init", func() (bool, error) {
		select {
		case <-u.waited:
			return false, errStop
		default:
		}
		b, _ := os.ReadFile(u.log)
		if !bytes.Contains(b, []byte("ready\n")) {
			return false, fmt.Errorf("not ready; log: %q", b)
		}
		pid, err := findInit(u.cmd.Process.Pid)
		if err != nil {
			return false, err
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return false, err
		}
		// Still pid 1 of a new namespace after the pidfd was opened: the
		// pidfd is this init's.
		if nspid, err := nsPids(pid); err != nil || nspid[len(nspid)-1] != 1 {
			unix.Close(fd)
			return false, fmt.Errorf("pid %d changed: %v", pid, err)
		}
		u.Pid, u.pidfd = pid, fd
		return true, nil
	})
	if err != nil {
		b, _ := os.ReadFile(u.log)
		t.Fatalf("harness: %v: %v\n%s", argv, err, b)
	}
	return u
}

// userNSHolder starts a process in a new user namespace and writes its maps
// (0 → UserNSBase, UserNSCount ids).
func userNSHolder() (*exec.Cmd, error) {
	h := exec.Command("unshare", "--user", "sleep", "3600")
	if err := h.Start(); err != nil {
		return nil, fmt.Errorf("start user namespace holder: %w", err)
	}
	fail := func(err error) (*exec.Cmd, error) {
		h.Process.Kill()
		h.Wait()
		return nil, err
	}
	own, err := NSIno(os.Getpid(), "user")
	if err != nil {
		return fail(err)
	}
	if err := waitFor("user namespace holder", func() (bool, error) {
		ino, err := NSIno(h.Process.Pid, "user")
		return err == nil && ino != own, err
	}); err != nil {
		return fail(err)
	}
	m := fmt.Sprintf("0 %d %d\n", UserNSBase, UserNSCount)
	for _, f := range []string{"uid_map", "gid_map"} {
		p := fmt.Sprintf("/proc/%d/%s", h.Process.Pid, f)
		if err := os.WriteFile(p, []byte(m), 0); err != nil {
			return fail(fmt.Errorf("write %s: %w", p, err))
		}
	}
	return h, nil
}

// findInit finds, below pid, the first process that is pid 1 of a pid
// namespace other than pid's own.
func findInit(pid int) (int, error) {
	top, err := NSIno(pid, "pid")
	if err != nil {
		return 0, err
	}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		kids, err := children(p)
		if err != nil {
			continue
		}
		for _, k := range kids {
			ns, err := NSIno(k, "pid")
			if err != nil {
				continue
			}
			if nspid, err := nsPids(k); err == nil && ns != top && nspid[len(nspid)-1] == 1 {
				return k, nil
			}
			queue = append(queue, k)
		}
	}
	return 0, fmt.Errorf("no container init below pid %d yet", pid)
}

// nsPids returns the NSpid line of /proc/PID/status: the pid in each pid
// namespace from the host's down to the process's own.
func nsPids(pid int) ([]int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			var out []int
			for _, f := range strings.Fields(v) {
				n, err := strconv.Atoi(f)
				if err != nil {
					return nil, fmt.Errorf("NSpid %q: %w", v, err)
				}
				out = append(out, n)
			}
			if len(out) == 0 {
				break
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("pid %d: no NSpid in status", pid)
}

// Command returns an exec.Cmd that runs args inside u (all of its
// namespaces and its root, cwd /) as uid (and gid = uid) of u's user
// namespace, bounded by ctx.
func (u *Unshare) Command(ctx context.Context, uid int, args ...string) *exec.Cmd {
	argv := []string{"-t", strconv.Itoa(u.Pid), "-a", "-r", "-w", "-S", strconv.Itoa(uid), "-G", strconv.Itoa(uid), "--"}
	cmd := exec.CommandContext(ctx, "nsenter", append(argv, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"}
	cmd.Dir = "/"
	cmd.WaitDelay = time.Second
	return cmd
}

// Exec runs args inside u as uid with DefaultTimeout and returns its
// stdout; a failure's error includes stderr.
func (u *Unshare) Exec(uid int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	return output(u.Command(ctx, uid, args...), fmt.Sprintf("container pid %d", u.Pid))
}

func output(cmd *exec.Cmd, where string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("exec %q in %s: %w: %s", cmd.Args, where, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// Alive reports whether u's init is still running.
func (u *Unshare) Alive() bool {
	if u.pidfd < 0 {
		return false
	}
	return !pidfdExited(u.pidfd, 0)
}

// Kill stops u: SIGKILL to its init (through a pidfd, so never another
// process), which ends every process in its pid namespace, and waits for its
// launcher. Safe to call more than once; registered with t.Cleanup.
func (u *Unshare) Kill() {
	u.once.Do(func() {
		if u.pidfd >= 0 {
			unix.PidfdSendSignal(u.pidfd, unix.SIGKILL, nil, 0)
			pidfdExited(u.pidfd, DefaultTimeout)
			unix.Close(u.pidfd)
			u.pidfd = -1
		}
		if u.cmd != nil && u.cmd.Process != nil {
			select {
			case <-u.waited:
			case <-time.After(5 * time.Second):
				u.cmd.Process.Kill()
				<-u.waited
			}
		}
		if u.holder != nil {
			u.holder.Process.Kill()
			u.holder.Wait()
		}
	})
}

// Spawn starts args inside u as uid and returns the host pid of the process
// once it has been exec'd (it is nsenter's child). It is killed on cleanup
// (through a pidfd) unless it exited before.
func (u *Unshare) Spawn(t testing.TB, uid int, args ...string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := u.Command(ctx, uid, args...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "spawn.log"))
	if err != nil {
		cancel()
		t.Fatalf("harness: %v", err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("harness: spawn %q in container %d: %v", args, u.Pid, err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	pid, pidfd := 0, -1
	t.Cleanup(func() {
		if pidfd >= 0 {
			unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
			unix.Close(pidfd)
		}
		select {
		case <-waited:
		case <-time.After(DefaultTimeout):
		}
		cancel()
	})
	err = waitFor("spawned process", func() (bool, error) {
		select {
		case <-waited:
			b, _ := os.ReadFile(logf.Name())
			return false, fmt.Errorf("%w: %s", errStop, b)
		default:
		}
		kids, err := children(cmd.Process.Pid)
		if err != nil || len(kids) != 1 {
			return false, err
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", kids[0]))
		if err != nil || string(comm) == "nsenter\n" {
			return false, err
		}
		fd, err := unix.PidfdOpen(kids[0], 0)
		if err != nil {
			return false, err
		}
		pid, pidfd = kids[0], fd
		return true, nil
	})
	if err != nil {
		t.Fatalf("harness: spawn %q in container %d: %v", args, u.Pid, err)
	}
	return pid
}
