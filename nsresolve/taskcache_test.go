package nsresolve

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// statusField returns a field of /proc/PID/status ("" when unreadable).
func statusField(pid int, key string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if k, v, ok := bytes.Cut(l, []byte(":")); ok && string(k) == key {
			return string(bytes.Fields(v)[0])
		}
	}
	return ""
}

// waitFor polls cond until it holds or the harness timeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(harness.DefaultTimeout); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// reuse starts a process whose host pid is pid, a number that was just
// freed: a shell writes pid-1 to the host's ns_last_pid and execs `unshare
// --pid --fork`, whose child (pid 1 of a new pid namespace) gets the next
// number, and which then runs as uid 4321. Other tasks of the machine may
// take the number first: then it tries again.
func reuse(t *testing.T, pid int) *exec.Cmd {
	t.Helper()
	script := fmt.Sprintf("echo %d > /proc/sys/kernel/ns_last_pid && exec unshare --pid --fork --kill-child setpriv --reuid=4321 --regid=4321 --clear-groups sleep 600", pid-1)
	for try := 0; try < 500; try++ {
		cmd := exec.Command("sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// unshare's child appears once it has forked: the reuse worked
		// if it got pid.
		children := fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid)
		var child string
		waitFor(t, "unshare's child", func() bool {
			b, _ := os.ReadFile(children)
			child = string(bytes.TrimSpace(b))
			return child != "" || !alive(cmd.Process.Pid)
		})
		if child == strconv.Itoa(pid) {
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			t.Logf("pid %d reused after %d tries", pid, try+1)
			return cmd
		}
		cmd.Process.Kill()
		cmd.Wait()
		time.Sleep(10 * time.Millisecond) // whoever took the number may be short-lived
	}
	t.Fatalf("pid %d was not reused in 500 tries", pid)
	return nil
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// TestCallerAfterPidReuse: a tid resolved (and cached) for one task, then
// freed and given to another task in another pid namespace with other ids,
// resolves to the new task, never to what was cached for the old one; and
// so does a request's (CallerOfRequest: its hit reads no ids from the task).
func TestCallerAfterPidReuse(t *testing.T) {
	t.Run("Caller", func(t *testing.T) { testPidReuse(t, false) })
	t.Run("CallerOfRequest", func(t *testing.T) { testPidReuse(t, true) })
}

func testPidReuse(t *testing.T, request bool) {
	harness.RequireRoot(t)
	harness.RequireTools(t, "sh", "unshare", "setpriv", "sleep")
	r := NewResolver()
	defer r.Close()
	old := exec.Command("sleep", "600")
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	pid := old.Process.Pid
	resolve := func() *Caller { return mustCaller(t, r, pid) }
	if request {
		resolve = func() *Caller {
			c, err := r.CallerOfRequest(pid, Ids{UID: 4321, GID: 4321}, WantAll)
			if err != nil {
				t.Fatalf("CallerOfRequest(%d): %v", pid, err)
			}
			return c
		}
	}
	c := resolve()
	if c.PID != pid || c.PidNS != r.HostPidNS() || c.CapEff&CapSysAdmin == 0 {
		t.Fatalf("old task: %+v", *c)
	}
	if _, _, n := r.TaskCacheStats(); n == 0 {
		t.Fatal("the old task was not cached")
	}
	old.Process.Kill()
	old.Wait() // reaped: the number is free

	reuse(t, pid)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	sleep, _ = filepath.EvalSymlinks(sleep)
	waitFor(t, "sleep as uid 4321 in the new task", func() bool {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		return exe == sleep && statusField(pid, "Uid") == "4321" && statusField(pid, "CapEff") == "0000000000000000"
	})
	hits, misses, _ := r.TaskCacheStats()
	c = resolve()
	want := statNS(t, pid, "pid")
	if c.PID != pid || c.EUID != 4321 || c.CapEff != 0 || c.PidNS != want || c.PidNS == r.HostPidNS() {
		t.Fatalf("reused pid %d resolved to %+v; want euid 4321, no capabilities, pid ns %v", pid, *c, want)
	}
	if h, m, _ := r.TaskCacheStats(); h != hits || m != misses+1 {
		t.Fatalf("the dead task's entry answered: hits %d→%d, misses %d→%d", hits, h, misses, m)
	}
	// The new task is cached now, and answers from the cache.
	if c2 := resolve(); *c2 != *c {
		t.Fatalf("second resolution %+v, first %+v", *c2, *c)
	}
	if h, _, _ := r.TaskCacheStats(); h != hits+1 {
		t.Fatalf("the new task's entry was not used: hits %d→%d", hits, h)
	}
}

// TestCallerSeesChanges: what a task may change about itself (ids by
// setuid, its user namespace by unshare, capabilities) is read afresh when
// its tid is resolved from the cache.
func TestCallerSeesChanges(t *testing.T) {
	harness.RequireRoot(t)
	harness.RequireTools(t, "sh", "unshare", "setpriv", "sleep")
	for _, tc := range []struct {
		name, exec string
		check      func(before, after *Caller) bool
	}{
		{"setuid", "setpriv --reuid=4321 --regid=4321 --clear-groups sleep 600",
			func(b, a *Caller) bool { return a.EUID == 4321 && a.UID == 4321 && a.EGID == 4321 && a.CapEff == 0 }},
		{"unshare user", "unshare -U sleep 600",
			func(b, a *Caller) bool { return a.UserNS != b.UserNS && a.MntNS == b.MntNS }},
		{"unshare mount", "unshare -m --propagation private sleep 600",
			func(b, a *Caller) bool { return a.MntNS != b.MntNS && a.UserNS == b.UserNS }},
		{"drop caps", "setpriv --inh-caps=-all --bounding-set=-sys_admin sleep 600",
			func(b, a *Caller) bool { return b.CapEff&CapSysAdmin != 0 && a.CapEff&CapSysAdmin == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewResolver()
			defer r.Close()
			cmd := exec.Command("sh", "-c", "read go; exec "+tc.exec)
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			pid := cmd.Process.Pid
			before := mustCaller(t, r, pid)
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			io.WriteString(in, "go\n")
			waitFor(t, "sleep", func() bool {
				e, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
				return e != exe && statusField(pid, "State") == "S"
			})
			time.Sleep(10 * time.Millisecond)
			hits, _, _ := r.TaskCacheStats()
			after := mustCaller(t, r, pid)
			if h, _, _ := r.TaskCacheStats(); h != hits+1 {
				t.Fatalf("not answered from the cache: hits %d→%d", hits, h)
			}
			if !tc.check(before, after) {
				t.Fatalf("before %+v\nafter %+v", *before, *after)
			}
			// A request's resolution (no ids read from the task) sees the
			// rest of the change as well.
			if req, err := r.CallerOfRequest(pid, Ids{UID: after.EUID, GID: after.EGID}, WantAll); err != nil || *req != *after {
				t.Fatalf("CallerOfRequest: %+v, %v; want %+v", req, err, *after)
			}
			if fresh := mustCaller(t, NewResolverWithOptions(ResolverOptions{TaskCacheSize: -1}), pid); *fresh != *after {
				t.Fatalf("cached %+v\nuncached %+v", *after, *fresh)
			}
		})
	}
}

// TestCallerOfRequest: a request's caller has the request's ids and,
// otherwise, what Caller finds, from the cache as on a miss.
func TestCallerOfRequest(t *testing.T) {
	r := NewResolver()
	defer r.Close()
	full := mustCaller(t, r, os.Getpid())
	for i := 0; i < 2; i++ {
		c, err := r.CallerOfRequest(os.Getpid(), Ids{UID: 1234, GID: 5678}, WantAll)
		if err != nil {
			t.Fatal(err)
		}
		exp := *full
		exp.UID, exp.EUID, exp.GID, exp.EGID = 1234, 1234, 5678, 5678
		if *c != exp {
			t.Errorf("resolution %d: %+v, expected %+v", i, *c, exp)
		}
	}
	if h, m, _ := r.TaskCacheStats(); h < 2 || m != 1 {
		t.Errorf("task cache: %d hits, %d misses; want 2+ hits, 1 miss", h, m)
	}
}

// TestCallerWith: the fields a resolution was not asked for are zero, the
// others those of a full resolution.
func TestCallerWith(t *testing.T) {
	r := NewResolver()
	defer r.Close()
	full := mustCaller(t, r, os.Getpid())
	for _, want := range []Want{0, WantCaps, WantMntNS, WantAll} {
		c, err := r.CallerWith(os.Getpid(), want)
		if err != nil {
			t.Fatal(err)
		}
		exp := *full
		if want&WantCaps == 0 {
			exp.CapEff = 0
		}
		if want&WantMntNS == 0 {
			exp.MntNS = NSID{}
		}
		if *c != exp {
			t.Errorf("want %b: %+v, expected %+v", want, *c, exp)
		}
	}
}
