package fanotify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// A keeper is a small process of its own (`imafs fanotify-keeper`) that
// holds a duplicate of every container's fanotify group. A group lives as
// long as one descriptor of it is open, and the kernel allows the events
// pending in it only when the last one closes: while the keeper holds the
// groups, a daemon that crashed or hands over to its successor leaves the
// containers' marks in place, and their execs and opens wait in the groups
// for the next daemon instead of running unmeasured. The next daemon takes
// the groups back (Get) and first answers, by the failure mode, the events
// its predecessor had read but not answered (their descriptors died with
// it; the kernel matches an answer by descriptor number, so it answers
// every number up to the high-water mark the predecessor reported).
//
// The keeper releases everything (the kernel then allows what is pending)
// when a daemon says so (a clean shutdown), or when no daemon has been
// connected for its grace period: a daemon that does not come back must
// not freeze its containers for good.
//
// Protocol: SOCK_SEQPACKET on a unix socket in the daemon's state directory
// (0700), one request per packet, one reply each; a group travels as
// SCM_RIGHTS. Requests: "get ID" (reply "ok HW" with the group, or "none
// HW"), "put ID" with the group, "del ID", "keep ID...", "hw N",
// "release". Replies to anything else: "error ...".

// KeeperSocket is the keeper's socket name in a state directory.
const KeeperSocket = "fanotify-keeper.sock"

const keeperMaxPacket = 64 << 10

// RunKeeper serves the keeper protocol on socket until it releases the
// groups (a "release" request, or grace passing with no daemon connected)
// or ctx ends (which releases too). ready, when not nil, is called once the
// socket accepts connections.
func RunKeeper(ctx context.Context, socket string, grace time.Duration, log *logrus.Logger, ready func()) error {
	if grace <= 0 {
		return errors.New("fanotify keeper: grace must be positive")
	}
	if log == nil {
		log = logrus.StandardLogger()
	}
	if c, err := net.Dial("unixpacket", socket); err == nil {
		c.Close()
		return fmt.Errorf("fanotify keeper: %s: another keeper answers there", socket)
	}
	os.Remove(socket) // stale, from a keeper that died
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: socket, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("fanotify keeper: listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	// Whoever connects can take every container's group: the daemon's
	// user only (the state directory should be 0700 too).
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("fanotify keeper: %w", err)
	}
	k := &keeper{groups: map[string]int{}, grace: grace, log: log.WithField("component", "fanotify-keeper"), done: make(chan struct{})}
	k.idle() // no daemon yet: the one that started us connects at once
	if ready != nil {
		ready()
	}
	go func() {
		select {
		case <-ctx.Done():
			k.release("stopped")
		case <-k.done:
		}
		ln.Close()
	}()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			select {
			case <-k.done:
				return nil
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			k.log.WithError(err).Warn("accept")
			continue
		}
		k.mu.Lock()
		if k.released {
			k.mu.Unlock()
			c.Close()
			continue
		}
		k.conns++
		if k.timer != nil {
			k.timer.Stop()
			k.timer = nil
		}
		k.mu.Unlock()
		go k.serve(c)
	}
}

type keeper struct {
	log   *logrus.Entry
	grace time.Duration
	done  chan struct{}

	mu       sync.Mutex
	groups   map[string]int // container id → our descriptor of its group
	hw       int            // highest event descriptor a daemon reported
	conns    int
	timer    *time.Timer
	released bool
}

// idle starts the grace timer (k.mu held or not yet shared).
func (k *keeper) idle() {
	k.timer = time.AfterFunc(k.grace, func() {
		k.mu.Lock()
		idle := k.conns == 0
		k.mu.Unlock()
		if idle {
			k.release(fmt.Sprintf("no daemon connected for %v", k.grace))
		}
	})
}

// release closes every group (the kernel allows their pending events) and
// ends the keeper.
func (k *keeper) release(why string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.releaseLocked(why)
}

func (k *keeper) releaseLocked(why string) {
	if k.released {
		return
	}
	k.released = true
	for id, fd := range k.groups {
		unix.Close(fd)
		delete(k.groups, id)
	}
	if k.timer != nil {
		k.timer.Stop()
	}
	k.log.WithField("why", why).Info("groups released")
	close(k.done)
}

func (k *keeper) serve(c *net.UnixConn) {
	defer func() {
		c.Close()
		k.mu.Lock()
		k.conns--
		if k.conns == 0 && !k.released {
			k.idle()
		}
		k.mu.Unlock()
	}()
	buf := make([]byte, keeperMaxPacket)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return
		}
		var fds []int
		if oobn > 0 {
			fds = receivedFDs(oob[:oobn])
		}
		reply, send := k.handle(string(buf[:n]), fds)
		var roob []byte
		if send >= 0 {
			roob = unix.UnixRights(send)
		}
		if _, _, err := c.WriteMsgUnix([]byte(reply), roob, nil); err != nil {
			return
		}
		if reply == "ok released" {
			return
		}
	}
}

// receivedFDs parses SCM_RIGHTS descriptors.
func receivedFDs(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

// handle answers one request; send is a descriptor to pass with the reply
// (-1: none). Descriptors received and not kept are closed.
func (k *keeper) handle(req string, fds []int) (reply string, send int) {
	keep := -1
	defer func() {
		for _, fd := range fds {
			if fd != keep {
				unix.Close(fd)
			}
		}
	}()
	verb, arg, _ := strings.Cut(req, " ")
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.released {
		return "error released", -1
	}
	switch verb {
	case "get":
		if fd, ok := k.groups[arg]; ok {
			return "ok " + strconv.Itoa(k.hw), fd
		}
		return "none " + strconv.Itoa(k.hw), -1
	case "put":
		if arg == "" || len(fds) != 1 {
			return "error put needs an id and one descriptor", -1
		}
		if old, ok := k.groups[arg]; ok {
			unix.Close(old)
		}
		keep = fds[0]
		k.groups[arg] = keep
		return "ok", -1
	case "del":
		if fd, ok := k.groups[arg]; ok {
			unix.Close(fd)
			delete(k.groups, arg)
		}
		return "ok", -1
	case "keep":
		want := map[string]bool{}
		for _, id := range strings.Fields(arg) {
			want[id] = true
		}
		var dropped []string
		for id, fd := range k.groups {
			if !want[id] {
				unix.Close(fd)
				delete(k.groups, id)
				dropped = append(dropped, id)
			}
		}
		if len(dropped) > 0 {
			sort.Strings(dropped)
			k.log.WithField("ids", dropped).Info("groups of containers no longer watched released")
		}
		return "ok", -1
	case "hw":
		n, err := strconv.Atoi(arg)
		if err != nil || n < 0 {
			return "error hw needs a number", -1
		}
		k.hw = max(k.hw, n)
		return "ok", -1
	case "release":
		k.releaseLocked("a daemon stopped cleanly")
		return "ok released", -1
	}
	return fmt.Sprintf("error unknown request %q", verb), -1
}

// KeeperClient is a daemon's connection to its keeper. Safe for
// concurrent use.
type KeeperClient struct {
	mu   sync.Mutex
	conn *net.UnixConn
	hw   int // the high-water mark reported so far
}

// DialKeeper connects to the keeper listening on socket.
func DialKeeper(socket string) (*KeeperClient, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socket, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("fanotify keeper %s: %w", socket, err)
	}
	return &KeeperClient{conn: c}, nil
}

// call sends req (with fd when >= 0) and returns the reply and the
// descriptor that came with it (-1: none).
func (k *KeeperClient) call(req string, fd int) (string, int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if _, _, err := k.conn.WriteMsgUnix([]byte(req), oob, nil); err != nil {
		return "", -1, fmt.Errorf("fanotify keeper: %s: %w", req, err)
	}
	buf := make([]byte, 512)
	roob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := k.conn.ReadMsgUnix(buf, roob)
	if err != nil {
		return "", -1, fmt.Errorf("fanotify keeper: %s: %w", req, err)
	}
	if n == 0 {
		return "", -1, fmt.Errorf("fanotify keeper: %s: connection closed", req)
	}
	got := -1
	if fds := receivedFDs(roob[:oobn]); len(fds) > 0 {
		got = fds[0]
		for _, extra := range fds[1:] {
			unix.Close(extra)
		}
	}
	reply := string(buf[:n])
	if msg, isErr := strings.CutPrefix(reply, "error "); isErr {
		if got >= 0 {
			unix.Close(got)
		}
		return "", -1, fmt.Errorf("fanotify keeper: %s: %s", req, msg)
	}
	return reply, got, nil
}

// Get returns the group the keeper holds for id (a new descriptor of it),
// or -1, and the highest event descriptor a daemon reported.
func (k *KeeperClient) Get(id string) (fd, highWater int, err error) {
	reply, fd, err := k.call("get "+id, -1)
	if err != nil {
		return -1, 0, err
	}
	verb, n, _ := strings.Cut(reply, " ")
	highWater, _ = strconv.Atoi(n)
	if verb != "ok" && fd >= 0 {
		unix.Close(fd)
		fd = -1
	}
	return fd, highWater, nil
}

// Put gives the keeper a duplicate of group fd for id.
func (k *KeeperClient) Put(id string, fd int) error {
	_, _, err := k.call("put "+id, fd)
	return err
}

// Del makes the keeper close its descriptor of id's group.
func (k *KeeperClient) Del(id string) error {
	_, _, err := k.call("del "+id, -1)
	return err
}

// Keep makes the keeper close the groups of every container not in ids.
func (k *KeeperClient) Keep(ids []string) error {
	_, _, err := k.call("keep "+strings.Join(ids, " "), -1)
	return err
}

// HighWater reports that this daemon read an event with descriptor fd.
// Only a new maximum (rounded up, so that it rarely changes) is sent.
func (k *KeeperClient) HighWater(fd int) error {
	k.mu.Lock()
	if fd <= k.hw {
		k.mu.Unlock()
		return nil
	}
	n := (fd + 64) &^ 63
	k.hw = n
	k.mu.Unlock()
	_, _, err := k.call("hw "+strconv.Itoa(n), -1)
	return err
}

// Release makes the keeper close every group (the kernel allows what is
// pending in them) and exit: a daemon's clean shutdown.
func (k *KeeperClient) Release() error {
	_, _, err := k.call("release", -1)
	return err
}

// Close closes the connection; the keeper keeps the groups for the next
// daemon (for its grace period when no other daemon is connected).
func (k *KeeperClient) Close() error { return k.conn.Close() }
