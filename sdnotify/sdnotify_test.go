package sdnotify

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// message is one datagram as a service manager receives it.
type message struct {
	pid   int32
	state string
	fds   []int
}

// listen binds a datagram socket at addr (a path, or @name: abstract) that
// receives the sender's credentials, as systemd's notify socket does.
func listen(t *testing.T, addr string) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		t.Fatalf("bind %s: %v", addr, err)
	}
	tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

// receive reads one datagram from fd (5 s at most).
func receive(t *testing.T, fd int) message {
	t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, 1024)
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatalf("recvmsg: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	m := message{pid: -1, state: string(buf[:n])}
	for i := range msgs {
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			m.pid = cred.Pid
		}
		if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			m.fds = append(m.fds, fds...)
		}
	}
	return m
}

func TestNotify(t *testing.T) {
	tests := []struct {
		name   string
		addr   string
		states []string
		want   string
	}{
		{"path", filepath.Join(t.TempDir(), "notify"), []string{Ready, Status("serving 2 containers")}, "READY=1\nSTATUS=serving 2 containers\n"},
		{"abstract", fmt.Sprintf("@imafs-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano()), []string{MainPID(4711), Ready}, "MAINPID=4711\nREADY=1\n"},
		{"one line status", filepath.Join(t.TempDir(), "notify"), []string{Stopping, Status("a\nb")}, "STOPPING=1\nSTATUS=a b\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := listen(t, tt.addr)
			if err := (Notifier{Addr: tt.addr}).Notify(tt.states...); err != nil {
				t.Fatal(err)
			}
			m := receive(t, fd)
			if m.state != tt.want {
				t.Errorf("received %q, want %q", m.state, tt.want)
			}
			if m.pid != int32(os.Getpid()) {
				t.Errorf("sender pid %d, want %d (this process)", m.pid, os.Getpid())
			}
		})
	}
}

func TestNotifyFromEnv(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "notify")
	fd := listen(t, addr)
	t.Setenv(EnvSocket, addr)
	n := FromEnv()
	if !n.Enabled() || n.Addr != addr {
		t.Fatalf("FromEnv() = %+v with %s=%s", n, EnvSocket, addr)
	}
	if err := n.Notify(Ready); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, fd); m.state != "READY=1\n" {
		t.Errorf("received %q", m.state)
	}
	if os.Getenv(EnvSocket) != addr {
		t.Errorf("%s not kept in the environment", EnvSocket)
	}
}

// TestNotifyUnset: without $NOTIFY_SOCKET every call is a no-op.
func TestNotifyUnset(t *testing.T) {
	t.Setenv(EnvSocket, "restored after the test")
	for _, set := range []bool{false, true} {
		if set {
			os.Setenv(EnvSocket, "")
		} else {
			os.Unsetenv(EnvSocket)
		}
		n := FromEnv()
		if n.Enabled() {
			t.Errorf("set=%v: enabled with %+v", set, n)
		}
		if err := n.Notify(Ready); err != nil {
			t.Errorf("set=%v: Notify: %v", set, err)
		}
		if err := n.Barrier(time.Second); err != nil {
			t.Errorf("set=%v: Barrier: %v", set, err)
		}
	}
}

func TestNotifyErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nobody-listens")
	tests := []struct {
		name, addr string
		states     []string
		want       string
	}{
		{"relative path", "run/notify", []string{Ready}, "not an absolute path"},
		{"nobody listens", missing, []string{Ready}, missing},
		{"no state", missing, nil, "no state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (Notifier{Addr: tt.addr}).Notify(tt.states...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Notify to %q: %v, want an error with %q", tt.addr, err, tt.want)
			}
		})
	}
}

// TestBarrier: BARRIER=1 carries one descriptor; Barrier returns when the
// receiver closes it, and fails when it is never closed.
func TestBarrier(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "notify")
	fd := listen(t, addr)
	n := Notifier{Addr: addr}

	done := make(chan error, 1)
	go func() { done <- n.Barrier(5 * time.Second) }()
	m := receive(t, fd)
	if m.state != "BARRIER=1\n" || len(m.fds) != 1 {
		t.Fatalf("received %q with %d descriptors, want BARRIER=1 with one", m.state, len(m.fds))
	}
	select {
	case err := <-done:
		t.Fatalf("Barrier returned before the receiver closed the descriptor: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	unix.Close(m.fds[0])
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Barrier: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Barrier did not return after the receiver closed the descriptor")
	}

	// A receiver that keeps the descriptor: Barrier gives up.
	go func() { done <- n.Barrier(200 * time.Millisecond) }()
	m = receive(t, fd)
	defer func() {
		for _, f := range m.fds {
			unix.Close(f)
		}
	}()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "not acknowledged") {
		t.Errorf("Barrier with the descriptor kept: %v, want not acknowledged", err)
	}
}
