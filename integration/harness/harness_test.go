package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func ns(t *testing.T, pid int, kind string) uint64 {
	t.Helper()
	ino, err := NSIno(pid, kind)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

func execOK(t *testing.T, exec func(int, ...string) (string, error), uid int, args ...string) string {
	t.Helper()
	out, err := exec(uid, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func TestUnshareContainer(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     UnshareOptions
		rootUID  string // host uid of container root
		userUID  string // host uid of container uid 1000
		ownUser  bool
		chrooted bool
	}{
		{"plain", UnshareOptions{Hostname: "plain-c"}, "0", "1000", false, false},
		{"user namespace", UnshareOptions{User: true, Hostname: "user-c"}, "100000", "101000", true, false},
		{"busybox chroot", UnshareOptions{Hostname: "chroot-c"}, "0", "1000", false, true},
		{"busybox chroot in user namespace", UnshareOptions{User: true}, "100000", "101000", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			RequireRoot(t)
			if tc.chrooted {
				tc.opts.Root = TempDir(t) // the container's root may be host uid 100000
				BusyboxRootfs(t, tc.opts.Root)
			}
			c := StartUnshare(t, tc.opts)
			self := os.Getpid()
			if ns(t, c.Pid, "pid") == ns(t, self, "pid") || ns(t, c.Pid, "mnt") == ns(t, self, "mnt") {
				t.Fatal("container shares the host's pid or mount namespace")
			}
			if got := ns(t, c.Pid, "user") != ns(t, self, "user"); got != tc.ownUser {
				t.Fatalf("own user namespace: %v, want %v", got, tc.ownUser)
			}
			if got := execOK(t, c.Exec, 0, "sh", "-c", "echo $$"); got == "" || got == fmt.Sprint(self) {
				t.Fatalf("pid inside: %q", got)
			}
			if got := execOK(t, c.Exec, 0, "cat", "/proc/1/cmdline"); !strings.Contains(got, "sleep") {
				t.Fatalf("/proc/1 inside is %q, want the container's init", got)
			}
			if tc.opts.Hostname != "" {
				host, _ := os.Hostname()
				if got := execOK(t, c.Exec, 0, "hostname"); got != tc.opts.Hostname || got == host {
					t.Fatalf("hostname inside %q, want %q", got, tc.opts.Hostname)
				}
			}
			for _, u := range []struct {
				uid  int
				host string
			}{{0, tc.rootUID}, {1000, tc.userUID}} {
				if got := execOK(t, c.Exec, u.uid, "id", "-u"); got != fmt.Sprint(u.uid) {
					t.Fatalf("id -u inside as %d: %q", u.uid, got)
				}
				hostUID := hostUIDOf(t, c, u.uid)
				if hostUID != u.host {
					t.Fatalf("uid %d inside is host uid %s, want %s", u.uid, hostUID, u.host)
				}
			}
			if tc.chrooted {
				if got := execOK(t, c.Exec, 0, "cat", "/etc/hostname"); got != "imafs-test" {
					t.Fatalf("root inside is not the busybox rootfs: /etc/hostname %q", got)
				}
			}
			c.Kill()
			if c.Alive() {
				t.Fatal("alive after Kill")
			}
		})
	}
}

// hostUIDOf starts `sleep` as uid inside c and reads its uid from the
// host's /proc, which shows host uids. nsenter forks the command as its
// child (it enters a pid namespace).
func hostUIDOf(t *testing.T, c *Unshare, uid int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	cmd := c.Command(ctx, uid, "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kid := 0
	defer func() {
		// Kill the sleep itself (nsenter waits for it); killing nsenter
		// would orphan it to the container's init.
		if kid > 0 {
			if fd, err := unix.PidfdOpen(kid, 0); err == nil {
				unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
				unix.Close(fd)
			}
		}
		if cmd.Wait() != nil {
			cmd.Process.Kill()
		}
	}()
	var uidLine string
	err := waitFor("exec'd sleep", func() (bool, error) {
		kids, err := children(cmd.Process.Pid)
		if err != nil || len(kids) != 1 {
			return false, err
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", kids[0]))
		if err != nil || !strings.Contains(string(b), "Name:\tsleep") {
			return false, err
		}
		kid = kids[0]
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Uid:"); ok {
				uidLine = strings.Fields(v)[1]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return uidLine
}

func TestNestedUnshare(t *testing.T) {
	for _, chroot := range []bool{false, true} {
		t.Run(fmt.Sprintf("chroot=%v", chroot), func(t *testing.T) {
			RequireRoot(t)
			var opts UnshareOptions
			if chroot {
				opts.Root = t.TempDir()
				BusyboxRootfs(t, opts.Root)
			}
			outer := StartUnshare(t, opts)
			inner := outer.Nested(t, UnshareOptions{Hostname: "inner"})
			if inner.Parent != outer {
				t.Fatal("Parent not set")
			}
			self := os.Getpid()
			po, pi := ns(t, outer.Pid, "pid"), ns(t, inner.Pid, "pid")
			if pi == po || pi == ns(t, self, "pid") {
				t.Fatal("inner container has no pid namespace of its own")
			}
			// inner's init is pid 1 in its namespace, some pid > 1 in outer's.
			nspid, err := nsPids(inner.Pid)
			if err != nil || len(nspid) != 3 || nspid[2] != 1 || nspid[1] == 1 {
				t.Fatalf("NSpid of inner init: %v, %v", nspid, err)
			}
			if got := execOK(t, inner.Exec, 0, "hostname"); got != "inner" {
				t.Fatalf("hostname in inner: %q", got)
			}
			// outer sees inner's processes, inner doesn't see outer's.
			if got := execOK(t, outer.Exec, 0, "cat", fmt.Sprintf("/proc/%d/cmdline", nspid[1])); !strings.Contains(got, "sleep") {
				t.Fatalf("outer does not see inner's init: %q", got)
			}
			if got := execOK(t, inner.Exec, 0, "sh", "-c", "ls /proc | grep -c '^[0-9]'"); got == "" || got > "9" {
				t.Logf("processes visible in inner: %s", got)
			}
			inner.Kill()
			if !outer.Alive() || inner.Alive() {
				t.Fatal("killing inner must leave outer running")
			}
		})
	}
}

func TestRuncContainer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   RuncOptions
		uidMap string
		sysAdm bool
	}{
		{"plain", RuncOptions{}, "0 0 4294967295", false},
		{"user namespace with CAP_SYS_ADMIN", RuncOptions{User: true, Capabilities: []string{"CAP_SYS_ADMIN"}}, fmt.Sprintf("0 %d %d", UserNSBase, UserNSCount), true},
		{"host pid namespace", RuncOptions{HostPID: true}, "0 0 4294967295", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewRuncContainer(t, tc.opts)
			self := os.Getpid()
			if got := ns(t, c.Pid, "pid") == ns(t, self, "pid"); got != tc.opts.HostPID {
				t.Fatalf("shares the host's pid namespace: %v, want %v", got, tc.opts.HostPID)
			}
			if ns(t, c.Pid, "mnt") == ns(t, self, "mnt") {
				t.Fatal("runc container shares the host's mount namespace")
			}
			st, err := c.State()
			if err != nil || st["status"] != "running" || int(st["pid"].(float64)) != c.Pid {
				t.Fatalf("state: %v, %v", st, err)
			}
			if got := execOK(t, c.Exec, 0, "hostname"); got != "imafs-test" {
				t.Fatalf("hostname: %q", got)
			}
			if got := execOK(t, c.Exec, 1000, "id", "-u"); got != "1000" {
				t.Fatalf("id -u as 1000: %q", got)
			}
			if got := strings.Join(strings.Fields(execOK(t, c.Exec, 0, "cat", "/proc/self/uid_map")), " "); got != tc.uidMap {
				t.Fatalf("uid_map inside: %q, want %q", got, tc.uidMap)
			}
			capEff := execOK(t, c.Exec, 0, "sh", "-c", "grep CapEff /proc/self/status | cut -f2")
			var caps uint64
			fmt.Sscanf(capEff, "%x", &caps)
			if got := caps&(1<<21) != 0; got != tc.sysAdm {
				t.Fatalf("CAP_SYS_ADMIN in container root's CapEff %s: %v, want %v", capEff, got, tc.sysAdm)
			}
			if got := execOK(t, c.Exec, 0, "ls", "/sys/kernel/security"); got != "" {
				t.Logf("/sys/kernel/security in container: %q", got)
			}
			if _, err := os.Stat("/sys/kernel/security"); err != nil {
				t.Fatal(err)
			}
			if err := c.Delete(); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if c.Alive() {
				t.Fatal("alive after Delete")
			}
			if _, err := os.Stat(filepath.Join(c.Root, c.ID)); err == nil {
				t.Fatal("runc state left after Delete")
			}
		})
	}
}

func TestRuncHooks(t *testing.T) {
	RequireRoot(t)
	dir, err := os.MkdirTemp("", "imafs-hooks-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	hook := func(name string) Hook {
		return Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(dir, name+".json")}, Timeout: 10}
	}
	c := NewRuncContainer(t, RuncOptions{Hooks: map[string][]Hook{
		"createRuntime": {hook("createRuntime")},
		"prestart":      {hook("prestart")},
		"poststop":      {hook("poststop")},
	}})
	for _, name := range []string{"createRuntime", "prestart"} {
		b, err := os.ReadFile(filepath.Join(dir, name+".json"))
		if err != nil {
			t.Fatalf("%s hook did not run: %v", name, err)
		}
		var st map[string]any
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("%s state: %v: %s", name, err, b)
		}
		if st["id"] != c.ID || int(st["pid"].(float64)) != c.Pid || st["bundle"] != c.Bundle {
			t.Fatalf("%s state: %s (want id %s, host pid %d, bundle %s)", name, b, c.ID, c.Pid, c.Bundle)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "poststop.json")); err == nil {
		t.Fatal("poststop ran before the container stopped")
	}
	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "poststop.json"))
	if err != nil {
		t.Fatalf("poststop hook did not run: %v", err)
	}
	if !strings.Contains(string(b), c.ID) {
		t.Fatalf("poststop state: %s", b)
	}
	t.Logf("poststop state: %s", b)
}
