package integration

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifyMsg is one sd_notify datagram as systemd receives it: the sender's
// pid from the kernel (SCM_CREDENTIALS), its states and descriptors.
type notifyMsg struct {
	pid    int
	states []string
	fds    []int
}

func (m notifyMsg) has(state string) bool {
	for _, s := range m.states {
		if s == state {
			return true
		}
	}
	return false
}

func (m notifyMsg) value(key string) (string, bool) {
	for _, s := range m.states {
		if v, ok := strings.CutPrefix(s, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

func (m notifyMsg) closeFDs() {
	for _, fd := range m.fds {
		unix.Close(fd)
	}
}

// notifySocket is a service manager's notify socket: a unix datagram socket
// that receives its senders' credentials (SO_PASSCRED), as systemd's does.
type notifySocket struct {
	path string
	msgs chan notifyMsg

	mu      sync.Mutex
	senders map[int]bool // every sender pid
}

// listenNotify binds a notify socket in a temporary directory and points
// $NOTIFY_SOCKET at it for the daemons this test starts (t.Setenv: the
// variable is restored when the test ends).
func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "imafs-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "notify"), msgs: make(chan notifyMsg, 64), senders: map[int]bool{}}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			n1, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return // closed
			}
			m := notifyMsg{pid: -1, states: lines(string(buf[:n1]))}
			cmsgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for i := range cmsgs {
				if cred, err := unix.ParseUnixCredentials(&cmsgs[i]); err == nil {
					m.pid = int(cred.Pid)
				}
				if fds, err := unix.ParseUnixRights(&cmsgs[i]); err == nil {
					m.fds = append(m.fds, fds...)
				}
			}
			n.mu.Lock()
			n.senders[m.pid] = true
			n.mu.Unlock()
			select {
			case n.msgs <- m:
			default:
				m.closeFDs() // nobody reads: drop
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
		for {
			select {
			case m := <-n.msgs:
				m.closeFDs()
			default:
				return
			}
		}
	})
	t.Setenv("NOTIFY_SOCKET", n.path)
	return n
}

// stopDaemons stops (stopPid) every process that sent a datagram, other
// than the ones in except, that is still an `imafs serve` on d's socket: a
// successor the test did not get to stop itself.
func (n *notifySocket) stopDaemons(t *testing.T, d *daemon, except ...int) {
	n.mu.Lock()
	pids := make([]int, 0, len(n.senders))
	for p := range n.senders {
		if p > 0 && !slices.Contains(except, p) {
			pids = append(pids, p)
		}
	}
	n.mu.Unlock()
	for _, p := range pids {
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/cmdline")
		args := strings.Split(string(cmdline), "\x00")
		if err != nil || !alive(p) || len(args) < 2 || args[1] != "serve" || !slices.Contains(args, d.socket) {
			continue // gone, or the pid was reused
		}
		stopPid(t, p)
	}
}

// next returns the next datagram (fails the test after timeout).
func (n *notifySocket) next(t *testing.T, what string, timeout time.Duration) notifyMsg {
	t.Helper()
	select {
	case m := <-n.msgs:
		t.Logf("sd_notify from pid %d: %q (%d fds)", m.pid, m.states, len(m.fds))
		return m
	case <-time.After(timeout):
		t.Fatalf("no sd_notify message after %v: wanted %s", timeout, what)
		return notifyMsg{}
	}
}

// waitFor returns the first datagram that has state, checking that every
// datagram before it came from one of the pids in from; the skipped ones'
// descriptors are closed (a barrier is acknowledged).
func (n *notifySocket) waitFor(t *testing.T, state string, from ...int) notifyMsg {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := n.next(t, state, time.Until(deadline))
		if m.has(state) {
			return m
		}
		known := false
		for _, p := range from {
			known = known || m.pid == p
		}
		if !known {
			t.Errorf("sd_notify %q from pid %d, none of %v", m.states, m.pid, from)
		}
		m.closeFDs()
	}
}

// alive reports whether pid is a live process (not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !bytes.Contains(b, []byte(") Z "))
}

// parentPid returns pid's parent (field 4 of /proc/PID/stat).
func parentPid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return ppid
}

// TestSdNotifyReadyStopping: a daemon started with $NOTIFY_SOCKET (systemd
// Type=notify) sends READY=1 from its own pid once it serves, after the
// containers of its state directory are back (a restart), and STOPPING=1
// on SIGTERM.
func TestSdNotifyReadyStopping(t *testing.T) {
	n := listenNotify(t)
	d := startDaemon(t)
	pid := d.cmd.Process.Pid
	m := n.waitFor(t, "READY=1", pid)
	if m.pid != pid {
		t.Errorf("READY=1 sent by pid %d, want the daemon's pid %d", m.pid, pid)
	}
	if st, _ := m.value("STATUS"); st != "serving (0 containers restored at start)" {
		t.Errorf("STATUS=%q with READY=1", st)
	}
	if _, err := d.imafs("ps"); err != nil {
		t.Errorf("ready but the control socket does not answer: %v", err)
	}

	c := busyboxContainer(t, false)
	attachUnshare(t, d, c, "sdr")
	d.cmd.Process.Signal(syscall.SIGTERM)
	m = n.waitFor(t, "STOPPING=1", pid)
	if m.pid != pid {
		t.Errorf("STOPPING=1 sent by pid %d, want %d", m.pid, pid)
	}
	d.waitExit(t, "daemon after SIGTERM")

	// The next daemon on the same state directory says READY=1 only once
	// it has restored the container: its tree is served by then.
	d2 := restartDaemon(t, d)
	pid2 := d2.cmd.Process.Pid
	m = n.waitFor(t, "READY=1", pid2)
	if m.pid != pid2 {
		t.Errorf("READY=1 after the restart sent by pid %d, want %d", m.pid, pid2)
	}
	if st, _ := m.value("STATUS"); st != "serving (1 containers restored at start)" {
		t.Errorf("STATUS=%q with READY=1 after the restart", st)
	}
	if count, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil || count != "1\n" {
		t.Errorf("container after the restart: %q, %v", count, err)
	}
	d2.cmd.Process.Signal(syscall.SIGTERM)
	if m = n.waitFor(t, "STOPPING=1", pid2); m.pid != pid2 {
		t.Errorf("STOPPING=1 sent by pid %d, want %d", m.pid, pid2)
	}
	d2.waitExit(t, "restarted daemon after SIGTERM")
}

// TestSdNotifyUpgrade: under systemd `imafs upgrade` leaves the service
// running: the successor (which kept $NOTIFY_SOCKET, and is the manager's
// child like the old daemon) sends MAINPID=<its pid> with READY=1 from its
// own pid, and the old daemon exits only after systemd acknowledged that
// (BARRIER=1: held here, the old daemon waits); then the successor serves
// the control socket and the container, and says STOPPING=1 on SIGTERM.
func TestSdNotifyUpgrade(t *testing.T) {
	n := listenNotify(t)
	d := startDaemon(t)
	t.Cleanup(func() { syscall.Unmount(d.hostMnt, syscall.MNT_DETACH) }) // if the successor did not
	oldPid := d.cmd.Process.Pid
	t.Cleanup(func() { n.stopDaemons(t, d, oldPid) }) // a successor left by a failure
	if m := n.waitFor(t, "READY=1", oldPid); m.pid != oldPid {
		t.Fatalf("READY=1 sent by pid %d, want %d", m.pid, oldPid)
	}
	c := busyboxContainer(t, false)
	attachUnshare(t, d, c, "sdu")

	type result struct {
		out string
		err error
	}
	upgraded := make(chan result, 1)
	go func() {
		out, err := d.imafs("upgrade")
		upgraded <- result{out, err}
	}()

	// The old daemon may say it is upgrading; the successor then names
	// itself the main process, ready, from its own pid.
	var m notifyMsg
	for deadline := time.Now().Add(60 * time.Second); ; {
		m = n.next(t, "MAINPID=", time.Until(deadline))
		if _, ok := m.value("MAINPID"); ok {
			break
		}
		if m.pid == oldPid {
			m.closeFDs()
			continue
		}
		// The successor's STATUS= lines while it restores are fine too;
		// anything else before MAINPID= is not.
		if len(m.fds) != 0 || m.has("READY=1") {
			t.Fatalf("the successor (pid %d) sent %q before MAINPID=", m.pid, m.states)
		}
	}
	v, _ := m.value("MAINPID")
	newPid, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("MAINPID=%q", v)
	}
	if newPid == oldPid || newPid <= 0 {
		t.Fatalf("MAINPID=%d: the old daemon's pid is %d", newPid, oldPid)
	}
	if m.pid != newPid {
		t.Errorf("MAINPID=%d sent by pid %d: systemd accepts it from the unit's processes (NotifyAccess=all), want the successor itself", newPid, m.pid)
	}
	if !m.has("READY=1") {
		t.Errorf("MAINPID= without READY=1: %q", m.states)
	}
	if !alive(newPid) {
		t.Fatalf("MAINPID=%d is not a live process", newPid)
	}
	// systemd fully supervises (waits for after SIGTERM, reaps) only a
	// main process that is its own child: the successor must be the
	// manager's child (here: this test's), not the old daemon's.
	if ppid := parentPid(t, newPid); ppid != os.Getpid() {
		t.Errorf("the successor's parent is pid %d, want the service manager (this test, pid %d); the old daemon is %d", ppid, os.Getpid(), oldPid)
	}
	if env, err := os.ReadFile("/proc/" + v + "/environ"); err != nil || !slices.Contains(strings.Split(string(env), "\x00"), "NOTIFY_SOCKET="+n.path) {
		t.Errorf("the successor's environment lacks NOTIFY_SOCKET=%s (%v)", n.path, err)
	}

	// Next: the successor's barrier. Until systemd (here: this test)
	// closes the descriptor, the old daemon must not exit.
	b := n.next(t, "BARRIER=1", 30*time.Second)
	if b.pid != newPid || !b.has("BARRIER=1") || len(b.fds) != 1 {
		b.closeFDs()
		t.Fatalf("after MAINPID=: %q with %d fds from pid %d, want BARRIER=1 with one fd from %d", b.states, len(b.fds), b.pid, newPid)
	}
	time.Sleep(300 * time.Millisecond) // what an old daemon that did not wait would use to exit
	select {
	case err := <-d.done:
		b.closeFDs()
		t.Fatalf("the old daemon exited (%v) before systemd acknowledged MAINPID=", err)
	case r := <-upgraded:
		b.closeFDs()
		t.Fatalf("imafs upgrade returned (%q, %v) before systemd acknowledged MAINPID=", r.out, r.err)
	default:
	}
	if !alive(oldPid) {
		b.closeFDs()
		t.Fatal("the old daemon is gone before systemd acknowledged MAINPID=")
	}
	b.closeFDs()

	var r result
	select {
	case r = <-upgraded:
	case <-time.After(60 * time.Second):
		t.Fatal("imafs upgrade did not return after the barrier")
	}
	if r.err != nil {
		t.Fatalf("upgrade: %v\n%s", r.err, d.logText())
	}
	if got := regexp.MustCompile(`daemon pid (\d+)`).FindStringSubmatch(r.out); got == nil || got[1] != v {
		t.Errorf("imafs upgrade printed %q, systemd was told MAINPID=%d", r.out, newPid)
	}
	d.waitExit(t, "old daemon after the upgrade")
	if !alive(newPid) {
		t.Fatalf("the main process systemd was told (pid %d) is gone", newPid)
	}
	rows := d.ps(t) // only the successor can answer now
	if _, ok := rows["sdu"]; !ok {
		t.Errorf("the successor does not list the container: %v", rows)
	}
	if _, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil {
		t.Errorf("container read from the successor: %v", err)
	}

	if err := syscall.Kill(newPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if m := n.waitFor(t, "STOPPING=1", newPid); m.pid != newPid {
		t.Errorf("STOPPING=1 sent by pid %d, want the successor %d", m.pid, newPid)
	}
	stopPid(t, newPid)
}

// TestSdNotifyUpgradeRollback: when the successor fails, the daemon that
// goes on says so: MAINPID=<its own pid> and READY=1, from its own pid.
func TestSdNotifyUpgradeRollback(t *testing.T) {
	needDaemon(t)
	n := listenNotify(t)
	// The daemon runs from a private copy of the binary, broken before the
	// upgrade (which starts what is at that path then).
	d, private := startDaemonFromCopy(t)
	pid := d.cmd.Process.Pid
	n.waitFor(t, "READY=1", pid)
	if err := os.Remove(private); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(private, []byte("#!/bin/sh\necho broken successor >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := d.imafs("upgrade"); err == nil {
		t.Fatalf("upgrade to a broken binary succeeded: %q", out)
	}
	m := n.waitFor(t, "READY=1", pid)
	if v, _ := m.value("MAINPID"); m.pid != pid || v != strconv.Itoa(pid) {
		t.Errorf("after a failed upgrade: %q from pid %d, want MAINPID=%d from it", m.states, m.pid, pid)
	}
	if st, _ := m.value("STATUS"); !strings.Contains(st, "upgrade failed") {
		t.Errorf("STATUS=%q after a failed upgrade", st)
	}
	if _, err := d.imafs("ps"); err != nil {
		t.Errorf("the daemon does not answer after a failed upgrade: %v", err)
	}
}
