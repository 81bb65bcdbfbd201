package sdnotify

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// EnvSocket is the environment variable that names the manager's socket.
const EnvSocket = "NOTIFY_SOCKET"

// States understood by the service manager.
const (
	// Ready: start-up is finished (Type=notify services become active).
	Ready = "READY=1"
	// Stopping: the service is shutting down.
	Stopping = "STOPPING=1"
)

// MainPID names pid as the service's main process.
func MainPID(pid int) string { return "MAINPID=" + strconv.Itoa(pid) }

// Status is a one-line, free-form status (systemctl status shows it).
func Status(text string) string {
	return "STATUS=" + strings.ReplaceAll(text, "\n", " ")
}

// Notifier sends notifications to the socket at Addr: a file system path
// or, with a leading '@', an abstract socket name. The zero Notifier
// (Addr "") sends nothing.
type Notifier struct {
	Addr string
}

// FromEnv returns the Notifier for $NOTIFY_SOCKET (a no-op one when it is
// unset or empty). The variable is left in the environment: processes this
// one starts (an upgrade's successor) notify the same manager.
func FromEnv() Notifier {
	return Notifier{Addr: os.Getenv(EnvSocket)}
}

// Enabled reports whether n sends anything.
func (n Notifier) Enabled() bool { return n.Addr != "" }

// Notify sends states (KEY=VALUE each) in one datagram. Without an address
// it does nothing and returns nil.
func (n Notifier) Notify(states ...string) error {
	if !n.Enabled() {
		return nil
	}
	if len(states) == 0 {
		return errors.New("sd_notify: no state to send")
	}
	return n.send([]byte(strings.Join(states, "\n")+"\n"), nil)
}

// Barrier sends BARRIER=1 with the write end of a pipe and waits until the
// manager closes it, which it does once it has processed every message this
// process sent before (sd_notify_barrier(3)); a manager that does not know
// BARRIER=1 closes the descriptor too. Without an address it returns nil at
// once.
func (n Notifier) Barrier(timeout time.Duration) error {
	if !n.Enabled() {
		return nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sd_notify barrier: pipe: %w", err)
	}
	defer r.Close()
	err = n.send([]byte("BARRIER=1\n"), unix.UnixRights(int(w.Fd())))
	w.Close() // the manager holds the only other write end now
	if err != nil {
		return err
	}
	if err := r.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("sd_notify barrier: %w", err)
	}
	var b [1]byte
	if _, err := r.Read(b[:]); !errors.Is(err, io.EOF) {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("sd_notify barrier on %s: not acknowledged after %v", n.Addr, timeout)
		}
		return fmt.Errorf("sd_notify barrier on %s: unexpected read: %v", n.Addr, err)
	}
	return nil
}

// send writes one datagram (with ancillary data oob) to n.Addr.
func (n Notifier) send(msg, oob []byte) error {
	if n.Addr[0] != '/' && n.Addr[0] != '@' {
		return fmt.Errorf("sd_notify: %s=%q: not an absolute path nor an abstract socket (@name)", EnvSocket, n.Addr)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sd_notify: socket: %w", err)
	}
	defer unix.Close(fd)
	// unix.SockaddrUnix turns a leading '@' into the abstract namespace's NUL.
	if err := unix.Sendmsg(fd, msg, oob, &unix.SockaddrUnix{Name: n.Addr}, unix.MSG_NOSIGNAL); err != nil {
		return fmt.Errorf("sd_notify to %s: %w", n.Addr, err)
	}
	return nil
}
