package fanotify

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// keeperFixture is a keeper served in this process on a temp socket, and a
// tmpfs the test mounts itself (permission marks go there only) with one
// file in it.
type keeperFixture struct {
	socket string
	file   string
	done   chan struct{} // closed when RunKeeper returned ...
	err    error         // ... this
	cancel context.CancelFunc
}

func newKeeperFixture(t *testing.T, grace time.Duration) *keeperFixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (fanotify permission marks, mounts)")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("imafs-keeper-test", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	f := &keeperFixture{socket: filepath.Join(dir, KeeperSocket), file: filepath.Join(mnt, "data"), done: make(chan struct{})}
	if err := os.WriteFile(f.file, []byte("data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	if !testing.Verbose() {
		log.SetOutput(io.Discard)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	ready := make(chan struct{})
	go func() {
		f.err = RunKeeper(ctx, f.socket, grace, log, func() { close(ready) })
		close(f.done)
	}()
	select {
	case <-ready:
	case <-f.done:
		t.Fatalf("RunKeeper: %v", f.err)
	case <-time.After(5 * time.Second):
		t.Fatal("keeper not ready")
	}
	// Registered after the mount's cleanup, so it runs before it: the
	// keeper releases its groups (any blocked open goes on) first.
	t.Cleanup(func() {
		cancel()
		select {
		case <-f.done:
		case <-time.After(5 * time.Second):
			t.Error("keeper did not stop")
		}
	})
	return f
}

// markedGroup is a new group with a FAN_OPEN_PERM mark on the fixture's
// tmpfs.
func (f *keeperFixture) markedGroup(t *testing.T) *group {
	t.Helper()
	g, err := newGroup()
	if err != nil {
		t.Fatal(err)
	}
	dirfd, err := unix.Open(filepath.Dir(f.file), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	if err := g.markFilesystem(dirfd, maskOpen); err != nil {
		t.Fatal(err)
	}
	return g
}

// dial connects a client to the fixture's keeper.
func (f *keeperFixture) dial(t *testing.T) *KeeperClient {
	t.Helper()
	k, err := DialKeeper(f.socket)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// deposit gives k's keeper a new marked group under id and returns it.
func (f *keeperFixture) deposit(t *testing.T, k *KeeperClient, id string) *group {
	t.Helper()
	g := f.markedGroup(t)
	if err := k.Put(id, g.fd()); err != nil {
		t.Fatal(err)
	}
	return g
}

// openInBackground opens the fixture's file from another goroutine; the
// channel gets the result once the open returns.
func (f *keeperFixture) openInBackground() <-chan error {
	done := make(chan error, 1)
	go func() {
		fh, err := os.Open(f.file)
		if err == nil {
			fh.Close()
		}
		done <- err
	}()
	return done
}

func waitOpen(t *testing.T, done <-chan error, within time.Duration, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: open: %v", what, err)
		}
	case <-time.After(within):
		t.Fatalf("%s: the open still waits after %v", what, within)
	}
}

func stillBlocked(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s: the open returned (%v), want it to wait for a daemon", what, err)
	case <-time.After(300 * time.Millisecond):
	}
}

// readOne reads one permission event from g and returns its descriptor.
func readOne(t *testing.T, g *group) int {
	t.Helper()
	g.f.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer g.f.SetReadDeadline(time.Time{})
	buf := make([]byte, 4096)
	n, err := g.f.Read(buf)
	if err != nil {
		t.Fatalf("read event: %v", err)
	}
	evs, err := parseEvents(buf[:n], nil)
	if err != nil || len(evs) != 1 {
		t.Fatalf("read %d events (%v), want 1", len(evs), err)
	}
	return int(evs[0].Fd)
}

// TestKeeperStaleEvents: a daemon reads a permission event and dies before
// it answers (its descriptors close). The keeper still holds the group, so
// the opener waits; the next daemon takes the group over, answers the
// stale event by descriptor number, and the open goes on.
func TestKeeperStaleEvents(t *testing.T) {
	f := newKeeperFixture(t, time.Minute)
	first := f.dial(t)
	g := f.deposit(t, first, "c1")
	opened := f.openInBackground()
	evfd := readOne(t, g)
	if err := first.HighWater(evfd); err != nil {
		t.Fatal(err)
	}
	// The daemon dies: its event descriptor, its group descriptor, its
	// connection.
	unix.Close(evfd)
	g.close()
	first.Close()
	stillBlocked(t, opened, "daemon dead, keeper holding the group")

	next := f.dial(t)
	defer next.Close()
	fd, hw, err := next.Get("c1")
	if err != nil || fd < 0 {
		t.Fatalf("Get(c1) = %d, %v; want the kept group", fd, err)
	}
	if hw < evfd {
		t.Fatalf("high-water mark %d below the event's descriptor %d", hw, evfd)
	}
	g2 := &group{f: os.NewFile(uintptr(fd), "fanotify")}
	defer g2.close()
	if n := answerStale(g2, hw, true); n != 1 {
		t.Fatalf("answerStale answered %d events, want 1", n)
	}
	waitOpen(t, opened, 5*time.Second, "stale event answered")
	// A new open is an event of the taken-over group, for the new daemon.
	opened = f.openInBackground()
	evfd = readOne(t, g2)
	if err := g2.respond(int32(evfd), true); err != nil {
		t.Fatal(err)
	}
	unix.Close(evfd)
	waitOpen(t, opened, 5*time.Second, "new event answered by the new daemon")
	if fd, _, err := next.Get("nobody"); err != nil || fd != -1 {
		t.Fatalf("Get(unknown id) = %d, %v; want -1, nil", fd, err)
	}
}

// TestKeeperGrace: with no daemon connected for its grace period, the
// keeper releases the groups (the kernel allows what waits) and stops.
func TestKeeperGrace(t *testing.T) {
	f := newKeeperFixture(t, 500*time.Millisecond)
	k := f.dial(t)
	f.deposit(t, k, "c1").close()
	opened := f.openInBackground()
	stillBlocked(t, opened, "daemon connected, not reading")
	k.Close()
	waitOpen(t, opened, 5*time.Second, "grace passed")
	f.wait(t)
}

// wait waits for RunKeeper to return, without error.
func (f *keeperFixture) wait(t *testing.T) {
	t.Helper()
	select {
	case <-f.done:
		if f.err != nil {
			t.Fatalf("RunKeeper: %v", f.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("keeper still running after 5s")
	}
}

// TestKeeperRelease: Release (a daemon's clean shutdown) lets what waits
// go on at once and stops the keeper; Del and Keep release single groups.
func TestKeeperRelease(t *testing.T) {
	f := newKeeperFixture(t, time.Minute)
	k := f.dial(t)
	defer k.Close()
	for _, id := range []string{"a", "b", "c"} {
		f.deposit(t, k, id).close()
	}
	// Opens wait for all three groups; each release lets one fewer hold it.
	opened := f.openInBackground()
	stillBlocked(t, opened, "three groups kept")
	if err := k.Del("a"); err != nil {
		t.Fatal(err)
	}
	if err := k.Keep([]string{"c"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if fd, _, err := k.Get(id); err != nil || fd != -1 {
			t.Fatalf("Get(%s) after its release = %d, %v", id, fd, err)
		}
	}
	stillBlocked(t, opened, "group c kept")
	if err := k.Release(); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, opened, 5*time.Second, "released")
	f.wait(t)
}

// TestKeeperBadRequests: malformed requests get an error and change
// nothing; a second keeper on the same socket refuses to start.
func TestKeeperBadRequests(t *testing.T) {
	f := newKeeperFixture(t, time.Minute)
	k := f.dial(t)
	defer k.Close()
	for _, req := range []string{"put c1", "put", "hw -3", "hw x", "frobnicate"} {
		if _, _, err := k.call(req, -1); err == nil {
			t.Errorf("request %q: no error", req)
		}
	}
	if fd, _, err := k.Get("c1"); err != nil || fd != -1 {
		t.Errorf("Get(c1) after a put without a descriptor = %d, %v", fd, err)
	}
	if st, err := os.Stat(f.socket); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o600 {
		t.Errorf("keeper socket mode %v, want 0600 (whoever connects can take the groups)", st.Mode().Perm())
	}
	err := RunKeeper(context.Background(), f.socket, time.Second, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "another keeper") {
		t.Errorf("second keeper on the socket: %v, want a refusal", err)
	}
}
