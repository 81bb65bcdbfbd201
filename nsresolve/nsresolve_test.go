package nsresolve

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
	"golang.org/x/sys/unix"
)

func statNS(t testing.TB, pid int, kind string) NSID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &st); err != nil {
		t.Fatal(err)
	}
	return NSID{st.Dev, st.Ino}
}

func mustCaller(t testing.TB, r *Resolver, tid int) *Caller {
	t.Helper()
	c, err := r.Caller(tid)
	if err != nil {
		t.Fatalf("Caller(%d): %v", tid, err)
	}
	return c
}

// openFDs counts this process's open fds.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestCallerOfAThread(t *testing.T) {
	r := NewResolver()
	defer r.Close()
	// A thread that is not the group leader: the FUSE request pid is a tid.
	// Lock a few goroutines to their threads at once: at most one of them
	// can be on the main thread.
	tids := make(chan int)
	release := make(chan struct{})
	defer close(release)
	for i := 0; i < 3; i++ {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			<-release
		}()
	}
	tid := 0
	for i := 0; i < 3; i++ {
		if t := <-tids; t != os.Getpid() {
			tid = t
		}
	}
	c := mustCaller(t, r, tid)
	self := os.Getpid()
	want := Caller{
		TID: tid, PID: self,
		PidNS: statNS(t, self, "pid"), UserNS: statNS(t, self, "user"), MntNS: statNS(t, self, "mnt"),
		UID: uint32(os.Getuid()), EUID: uint32(os.Geteuid()), GID: uint32(os.Getgid()), EGID: uint32(os.Getegid()),
		CapEff: c.CapEff,
	}
	if *c != want {
		t.Fatalf("got %+v\nwant %+v", *c, want)
	}
	if os.Geteuid() == 0 && c.CapEff&CapSysAdmin == 0 {
		t.Fatalf("root without CAP_SYS_ADMIN in CapEff %#x", c.CapEff)
	}
	if r.HostPidNS() != c.PidNS || r.HostUserNS() != c.UserNS {
		t.Fatal("HostPidNS/HostUserNS are not the test's own namespaces")
	}
	// Host caller: Owner says host without consulting registered.
	id, ok, err := r.Owner(c, func(NSID) bool { t.Fatal("asked about the host pid ns"); return true })
	if err != nil || ok || id != r.HostPidNS() {
		t.Fatalf("Owner(host) = %v, %v, %v", id, ok, err)
	}
}

func TestCallerGone(t *testing.T) {
	r := NewResolver()
	defer r.Close()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// The pid may (rarely) have been reused already; then it's a live task.
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Skipf("pid %d reused already", pid)
	}
	if _, err := r.Caller(pid); !errors.Is(err, ErrGone) {
		t.Fatalf("Caller(exited pid): %v, want ErrGone", err)
	}
	for _, tid := range []int{0, -1} {
		if _, err := r.Caller(tid); err == nil {
			t.Fatalf("Caller(%d) succeeded", tid)
		}
	}
}

func TestCallerOfAZombie(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	// Wait for it to exit but don't reap it.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := NewResolver().Caller(cmd.Process.Pid); !errors.Is(err, ErrGone) {
		t.Fatalf("Caller(zombie): %v, want ErrGone", err)
	}
}

// world is a set of real containers: A (plain unshare), B nested in A, C
// nested in B, D beside A; plus a process in A that made its own mount
// namespace (`unshare -m`) and one in a chroot'ed busybox container.
type world struct {
	a, b, c, d *harness.Unshare
	aUnshareM  int // pid of `unshare -m sleep` run inside A
	pins       map[string]*Pinned
}

func newWorld(t testing.TB) *world {
	harness.RequireRoot(t)
	w := &world{pins: map[string]*Pinned{}}
	w.a = harness.StartUnshare(t, harness.UnshareOptions{})
	w.b = w.a.Nested(t, harness.UnshareOptions{})
	w.c = w.b.Nested(t, harness.UnshareOptions{})
	w.d = harness.StartUnshare(t, harness.UnshareOptions{})
	w.aUnshareM = w.a.Spawn(t, 0, "unshare", "-m", "--propagation", "private", "sleep", "600")
	for name, u := range map[string]*harness.Unshare{"A": w.a, "B": w.b, "C": w.c, "D": w.d} {
		p, err := Pin(u.Pid)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		w.pins[name] = p
	}
	// unshare -m: wait until it has its own mount namespace.
	for deadline := time.Now().Add(harness.DefaultTimeout); statNS(t, w.aUnshareM, "mnt") == w.pins["A"].MntNS; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("unshare -m in A did not make a mount namespace")
		}
	}
	return w
}

func (w *world) registered(t testing.TB, names string) func(NSID) bool {
	set := map[NSID]bool{}
	for _, n := range strings.Split(names, ",") {
		if n != "" {
			set[w.pins[n].PidNS] = true
		}
	}
	return func(id NSID) bool { return set[id] }
}

func TestOwner(t *testing.T) {
	w := newWorld(t)
	hostNS := statNS(t, os.Getpid(), "pid")
	pids := map[string]int{"A": w.a.Pid, "B": w.b.Pid, "C": w.c.Pid, "D": w.d.Pid, "A/unshare-m": w.aUnshareM, "host": os.Getpid()}
	cases := []struct {
		caller, registered, want string // want "" = host
	}{
		{"host", "A,B,C,D", ""},
		{"A", "", ""},
		{"A", "A", "A"},
		{"A", "B,C,D", ""},
		{"B", "A", "A"},
		{"B", "A,B", "B"},
		{"B", "B", "B"},
		{"C", "A", "A"},
		{"C", "A,B", "B"},
		{"C", "A,B,C", "C"},
		{"C", "D", ""},
		{"D", "A,B,C", ""},
		{"D", "D", "D"},
		{"A/unshare-m", "A", "A"},
		{"A/unshare-m", "A,B", "A"},
		{"A/unshare-m", "", ""},
	}
	for _, o := range []ResolverOptions{{}, {CacheSize: 1}, {CacheSize: -1}, {ProcOnly: true}, {ProcOnly: true, CacheSize: -1}} {
		size := o.CacheSize
		t.Run(fmt.Sprintf("cache=%d,proc=%v", o.CacheSize, o.ProcOnly), func(t *testing.T) {
			r := NewResolverWithOptions(o)
			defer r.Close()
			for round := 0; round < 2; round++ { // second round hits the cache
				for _, tc := range cases {
					c := mustCaller(t, r, pids[tc.caller])
					asked := map[NSID]bool{}
					reg := w.registered(t, tc.registered)
					id, ok, err := r.Owner(c, func(id NSID) bool {
						if id == hostNS {
							t.Errorf("%s: registered asked about the host pid ns", tc.caller)
						}
						asked[id] = true
						return reg(id)
					})
					if err != nil {
						t.Fatalf("%s registered=%s: %v", tc.caller, tc.registered, err)
					}
					want, wantOK := hostNS, false
					if tc.want != "" {
						want, wantOK = w.pins[tc.want].PidNS, true
					}
					if id != want || ok != wantOK {
						t.Errorf("round %d: Owner(%s) with %q registered = %v,%v; want %s (%v)", round, tc.caller, tc.registered, id, ok, tc.want, want)
					}
				}
			}
			hits, misses, n := r.CacheStats()
			t.Logf("cache size %d: %d hits, %d misses, %d cached", size, hits, misses, n)
			if size > 0 && n > size {
				t.Errorf("cache holds %d > %d", n, size)
			}
		})
	}
	// unshare -m inside A keeps A's pid ns but not its mount ns.
	r := NewResolver()
	defer r.Close()
	c := mustCaller(t, r, w.aUnshareM)
	if c.PidNS != w.pins["A"].PidNS || c.MntNS == w.pins["A"].MntNS {
		t.Fatalf("unshare -m in A: pid ns %v (A %v), mnt ns %v (A %v)", c.PidNS, w.pins["A"].PidNS, c.MntNS, w.pins["A"].MntNS)
	}
}

func TestPin(t *testing.T) {
	harness.RequireRoot(t)
	u := harness.StartUnshare(t, harness.UnshareOptions{User: true})
	p, err := Pin(u.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := [4]NSID{p.PidNS, p.UserNS, p.MntNS, p.CgroupNS}
	want := [4]NSID{statNS(t, u.Pid, "pid"), statNS(t, u.Pid, "user"), statNS(t, u.Pid, "mnt"), statNS(t, u.Pid, "cgroup")}
	if got != want {
		t.Fatalf("pinned %v, want %v", got, want)
	}
	if p.PidFD() < 0 || p.NSFD("mnt") < 0 || p.NSFD("bogus") != -1 {
		t.Fatal("fds not exposed")
	}
	var st unix.Stat_t
	if err := unix.Fstat(p.NSFD("user"), &st); err != nil || (NSID{st.Dev, st.Ino}) != p.UserNS {
		t.Fatalf("user fd does not hold the user ns: %v", err)
	}
	if !p.Alive() {
		t.Fatal("not alive")
	}
	u.Kill()
	if p.Alive() {
		t.Fatal("alive after the init was killed")
	}
	// The namespace stays pinned after its init died: the fd still names it.
	if err := unix.Fstat(p.NSFD("pid"), &st); err != nil || (NSID{st.Dev, st.Ino}) != p.PidNS {
		t.Fatalf("pid ns fd after exit: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if p.Alive() || p.PidFD() != -1 || p.NSFD("pid") != -1 {
		t.Fatal("fds after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := Pin(u.Pid); err == nil {
		// u.Pid could have been reused by now; only then may Pin succeed.
		if _, serr := os.Stat(fmt.Sprintf("/proc/%d", u.Pid)); serr != nil {
			t.Fatal("Pin of a dead pid succeeded")
		}
	}
	if _, err := Pin(0); err == nil {
		t.Fatal("Pin(0) succeeded")
	}
	// The zero Pinned (as tests elsewhere build) holds nothing.
	var zero Pinned
	if zero.Alive() || zero.PidFD() != -1 || zero.NSFD("pid") != -1 || zero.Close() != nil {
		t.Fatal("zero Pinned is not empty")
	}
}

// TestNeverWrongAfterNamespaceExit churns through short-lived containers
// with a tiny cache, registering some of them: every answer must be the
// container's own registered namespace or the host, never a dead
// container's, and evicted entries must release their fds.
func TestNeverWrongAfterNamespaceExit(t *testing.T) {
	harness.RequireRoot(t)
	r := NewResolverWithOptions(ResolverOptions{CacheSize: 2})
	fds := openFDs(t)
	hostNS := r.HostPidNS()
	var dead []*Pinned // namespaces of exited containers, still registered
	defer func() {
		for _, p := range dead {
			p.Close()
		}
	}()
	seen := map[NSID]bool{}
	var users []NSID
	for i := 0; i < 12; i++ {
		u := harness.StartUnshare(t, harness.UnshareOptions{User: true})
		inner := u.Nested(t, harness.UnshareOptions{})
		p, err := Pin(u.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if seen[p.PidNS] {
			t.Fatalf("round %d: pid ns inode %v reused while pinned", i, p.PidNS)
		}
		seen[p.PidNS] = true
		registered := func(id NSID) bool {
			if id == p.PidNS && i%2 == 0 {
				return true
			}
			for _, d := range dead {
				if d.PidNS == id {
					return true
				}
			}
			return false
		}
		for _, pid := range []int{u.Pid, inner.Pid} {
			c, err := r.Caller(pid)
			if err != nil {
				t.Fatal(err)
			}
			id, ok, err := r.Owner(c, registered)
			if err != nil {
				t.Fatal(err)
			}
			want, wantOK := hostNS, false
			if i%2 == 0 {
				want, wantOK = p.PidNS, true
			}
			if id != want || ok != wantOK {
				t.Fatalf("round %d pid %d: Owner = %v,%v; want %v,%v", i, pid, id, ok, want, wantOK)
			}
			// Root of its own user namespace, not of any earlier one.
			if priv, err := r.Privileged(c, p.UserNS); err != nil || !priv {
				t.Fatalf("round %d pid %d: Privileged in own user ns = %v, %v", i, pid, priv, err)
			}
			for _, old := range users {
				if priv, err := r.Privileged(c, old); err != nil || priv {
					t.Fatalf("round %d pid %d: Privileged in an old user ns = %v, %v", i, pid, priv, err)
				}
			}
		}
		users = append(users, p.UserNS)
		u.Kill()
		inner.Kill()
		// Callers of the dead container can't be resolved any more.
		if _, err := r.Caller(u.Pid); err == nil {
			if _, serr := os.Stat(fmt.Sprintf("/proc/%d", u.Pid)); serr != nil {
				t.Fatal("Caller of a dead init succeeded")
			}
		}
		dead = append(dead, p)
	}
	if _, _, n := r.CacheStats(); n > 2 {
		t.Fatalf("cache grew to %d", n)
	}
	r.Close()
	for _, p := range dead {
		p.Close()
	}
	dead = nil
	if now := openFDs(t); now > fds {
		t.Fatalf("fds leaked: %d before, %d after", fds, now)
	}
}

func TestOwnerConcurrent(t *testing.T) {
	w := newWorld(t)
	r := NewResolverWithOptions(ResolverOptions{CacheSize: 2})
	defer r.Close()
	reg := w.registered(t, "A,C,D")
	want := map[int]NSID{w.a.Pid: w.pins["A"].PidNS, w.b.Pid: w.pins["A"].PidNS, w.c.Pid: w.pins["C"].PidNS, w.d.Pid: w.pins["D"].PidNS, w.aUnshareM: w.pins["A"].PidNS}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				for pid, ns := range want {
					c, err := r.Caller(pid)
					if err != nil {
						errs <- err
						return
					}
					id, ok, err := r.Owner(c, reg)
					if err != nil || !ok || id != ns {
						errs <- fmt.Errorf("pid %d: %v %v %v, want %v", pid, id, ok, err, ns)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestPrivileged(t *testing.T) {
	harness.RequireRoot(t)
	harness.RequireTools(t, "setpriv")
	r := NewResolver()
	defer r.Close()
	uncachedR := NewResolverWithOptions(ResolverOptions{CacheSize: -1})
	u := harness.StartUnshare(t, harness.UnshareOptions{User: true})
	pu, err := Pin(u.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer pu.Close()
	plain := harness.StartUnshare(t, harness.UnshareOptions{})
	host := r.HostUserNS()

	spawnHost := func(args ...string) int {
		cmd := exec.Command(args[0], args[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for deadline := time.Now().Add(harness.DefaultTimeout); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) { // wait for the exec
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); string(b) == "sleep\n" {
				return cmd.Process.Pid
			}
		}
		t.Fatalf("%v did not exec sleep", args)
		return 0
	}
	for _, tc := range []struct {
		name   string
		pid    int
		userNS NSID
		root   bool // RootIn
		priv   bool // Privileged
	}{
		{"host root, host view", os.Getpid(), host, true, true},
		{"host root, container view", os.Getpid(), pu.UserNS, false, false},
		{"host uid 1000, host view", spawnHost("setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sleep", "600"), host, false, false},
		{"host root without CAP_SYS_ADMIN", spawnHost("setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "sleep", "600"), host, true, false},
		{"container root (host 100000), its view", u.Spawn(t, 0, "sleep", "600"), pu.UserNS, true, true},
		{"container root (host 100000), host view", u.Spawn(t, 0, "sleep", "600"), host, false, false},
		{"container uid 1000, its view", u.Spawn(t, 1000, "sleep", "600"), pu.UserNS, false, false},
		{"root of a child user ns in the container", u.Spawn(t, 0, "unshare", "-U", "-r", "sleep", "600"), pu.UserNS, false, false},
		{"root of a container without user ns, host view", plain.Spawn(t, 0, "sleep", "600"), host, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []*Resolver{r, uncachedR} {
				var c *Caller
				for deadline := time.Now().Add(harness.DefaultTimeout); ; time.Sleep(2 * time.Millisecond) { // unshare -U takes a moment to become sleep
					c = mustCaller(t, r, tc.pid)
					b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", tc.pid))
					if string(b) != "unshare\n" || time.Now().After(deadline) {
						break
					}
				}
				root, err := r.RootIn(c, tc.userNS)
				if err != nil || root != tc.root {
					t.Errorf("RootIn = %v, %v; want %v (caller %+v)", root, err, tc.root, *c)
				}
				priv, err := r.Privileged(c, tc.userNS)
				if err != nil || priv != tc.priv {
					t.Errorf("Privileged = %v, %v; want %v (caller %+v)", priv, err, tc.priv, *c)
				}
			}
		})
	}
	// A caller whose task is gone: an error, not an answer.
	pid := u.Spawn(t, 0, "sleep", "600")
	c := mustCaller(t, r, pid)
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	unix.Poll(fds, 10000)
	unix.Close(fd)
	// Until nsenter reaps it, the zombie is still that task (and its
	// credentials still answer); wait for it to be gone.
	for i := 0; ; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			break
		}
		if i > 5000 {
			t.Fatal("killed task not reaped")
		}
		time.Sleep(time.Millisecond)
	}
	// Without a cache only /proc could answer: an error, not an answer.
	uncached := NewResolverWithOptions(ResolverOptions{CacheSize: -1})
	if _, err := uncached.Privileged(c, pu.UserNS); !errors.Is(err, ErrGone) {
		t.Fatalf("Privileged of a dead task: %v, want ErrGone", err)
	}
}

// TestCallerPathsAgree: the pidfd-ioctl path and the /proc text path
// resolve every kind of caller identically.
func TestCallerPathsAgree(t *testing.T) {
	w := newWorld(t)
	u := harness.StartUnshare(t, harness.UnshareOptions{User: true})
	fast, slow := NewResolver(), NewResolverWithOptions(ResolverOptions{ProcOnly: true})
	defer fast.Close()
	defer slow.Close()
	pids := []int{os.Getpid(), w.a.Pid, w.b.Pid, w.c.Pid, w.aUnshareM, u.Pid,
		u.Spawn(t, 0, "sleep", "600"), u.Spawn(t, 1000, "sleep", "600")}
	for _, pid := range pids {
		a, b := mustCaller(t, fast, pid), mustCaller(t, slow, pid)
		if *a != *b {
			t.Errorf("pid %d: pidfd path %+v, /proc path %+v", pid, *a, *b)
		}
	}
	if fast.procOnly.Load() {
		t.Skip("this kernel has no PIDFD_GET_INFO: only the /proc path was tested")
	}
	if c := mustCaller(t, fast, pids[len(pids)-1]); c.EUID != harness.UserNSBase+1000 || c.CapEff != 0 {
		t.Errorf("uid 1000 in a user-namespaced container: %+v", *c)
	}
}

// TestStaleCaller: a Caller kept past its task's death is still answered
// from the cache while the cache pins its namespace (the answer is about
// the namespace it was in, which can't have been replaced), and gives
// ErrGone once the entry is gone and /proc/TID no longer is that task.
func TestStaleCaller(t *testing.T) {
	harness.RequireRoot(t)
	a := harness.StartUnshare(t, harness.UnshareOptions{})
	pa, err := Pin(a.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	reg := func(id NSID) bool { return id == pa.PidNS }
	r := NewResolver()
	defer r.Close()
	pid := a.Spawn(t, 0, "sleep", "600")
	c := mustCaller(t, r, pid)
	a.Kill() // kills every process in A's pid namespace
	for i := 0; ; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			break
		}
		if i > 5000 {
			t.Fatal("process not reaped")
		}
		time.Sleep(time.Millisecond)
	}
	id, ok, err := r.Owner(c, reg)
	if err != nil || !ok || id != pa.PidNS {
		t.Fatalf("cached: Owner = %v, %v, %v; want A", id, ok, err)
	}
	r.Close() // drop the cache: now only /proc could answer
	if id, ok, err := r.Owner(c, reg); !errors.Is(err, ErrGone) {
		t.Fatalf("uncached stale caller: Owner = %v, %v, %v; want ErrGone", id, ok, err)
	}
}

// TestChurn resolves short-lived processes (each lives for one /bin/true)
// in containers A, B (nested in A) and D while they come and go, with a
// one-entry cache so entries are evicted under the callers' feet: every
// answer is either an error (the task is gone) or the right container.
func TestChurn(t *testing.T) {
	w := newWorld(t)
	reg := w.registered(t, "A,D")
	owner := map[NSID]NSID{
		w.pins["A"].PidNS: w.pins["A"].PidNS,
		w.pins["B"].PidNS: w.pins["A"].PidNS,
		w.pins["D"].PidNS: w.pins["D"].PidNS,
	}
	loop := "end=$(($(date +%s)+3)); while [ $(date +%s) -lt $end ]; do /bin/true; done; sleep 600"
	shells := []int{
		w.a.Spawn(t, 0, "sh", "-c", loop),
		w.b.Spawn(t, 0, "sh", "-c", loop),
		w.d.Spawn(t, 0, "sh", "-c", loop),
	}
	r := NewResolverWithOptions(ResolverOptions{CacheSize: 1})
	defer r.Close()
	var mu sync.Mutex
	resolved, gone := 0, 0
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second)
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				for _, sh := range shells {
					b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", sh, sh))
					if err != nil {
						continue
					}
					for _, f := range strings.Fields(string(b)) {
						var pid int
						fmt.Sscan(f, &pid)
						c, err := r.Caller(pid)
						if err == nil {
							var id NSID
							var ok bool
							id, ok, err = r.Owner(c, reg)
							if err == nil {
								want, known := owner[c.PidNS]
								if known && (!ok || id != want) {
									t.Errorf("pid %d in pid ns %v: Owner %v,%v; want %v", pid, c.PidNS, id, ok, want)
								}
								mu.Lock()
								resolved++
								mu.Unlock()
								continue
							}
						}
						if !errors.Is(err, ErrGone) {
							t.Errorf("pid %d: %v (want ErrGone or an answer)", pid, err)
						}
						mu.Lock()
						gone++
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d short-lived callers resolved, %d gone before resolution", resolved, gone)
	if resolved == 0 {
		t.Fatal("no caller resolved: the test proved nothing")
	}
}
