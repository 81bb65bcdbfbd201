package fanotify_test

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/fanotify"
)

// TestSuspendHandover: an engine with a keeper suspends (a daemon's
// upgrade); an exec in its container waits in the kept group instead of
// running unmeasured; the next engine on the same keeper takes the group
// over, and the exec runs, measured. Closing that engine releases the
// keeper.
func TestSuspendHandover(t *testing.T) {
	needEnv(t)
	socket := filepath.Join(t.TempDir(), fanotify.KeeperSocket)
	log := logrus.New()
	if !testing.Verbose() {
		log.SetOutput(io.Discard)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	ready := make(chan struct{})
	go func() { stopped <- fanotify.RunKeeper(ctx, socket, time.Minute, log, func() { close(ready) }) }()
	<-ready
	first, err := fanotify.DialKeeper(socket)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, fanotify.Options{Keeper: first})
	t.Cleanup(cancel) // runs before the env's cleanups: nothing stays blocked
	c := e.container("handover", "busybox-tool")
	c.setPolicy("measure func=BPRM_CHECK")
	if err := e.eng.Suspend(); err != nil {
		t.Fatal(err)
	}

	ran := make(chan error, 1)
	go func() {
		_, err := c.exec("/bin/busybox-tool", "true")
		ran <- err
	}()
	select {
	case err := <-ran:
		t.Fatalf("exec while no engine reads the kept group returned (%v), want it to wait", err)
	case <-time.After(500 * time.Millisecond):
	}

	next, err := fanotify.DialKeeper(socket)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := fanotify.New(fanotify.Options{Registry: e.reg, Log: log, Keeper: next, Manual: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Watch(c.ns); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("exec after the takeover: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exec still waits after the next engine took the group over")
	}
	if got := named(c.ns.List, "/bin/busybox-tool"); len(got) != 1 {
		t.Fatalf("%d entries for /bin/busybox-tool, want 1 (measured by the next engine)", len(got))
	}
	if s := eng.Stats(); s.Measured != 1 {
		t.Errorf("next engine's stats: %+v, want the one measurement", s)
	}
	// What the keeper holds for a container no engine watches any more (one
	// that exited while no daemon ran) is released; the watched one stays.
	other, err := fanotify.DialKeeper(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	if err := other.Put("exited", p[0]); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[0])
	unix.Close(p[1])
	if err := eng.ReleaseUnwatched(); err != nil {
		t.Fatal(err)
	}
	if fd, _, err := other.Get("exited"); err != nil || fd != -1 {
		t.Errorf("Get(exited) after ReleaseUnwatched = %d, %v; want -1", fd, err)
	}
	if fd, _, err := other.Get(c.ns.ID); err != nil || fd < 0 {
		t.Errorf("Get(%s) after ReleaseUnwatched = %d, %v; want the watched group", c.ns.ID, fd, err)
	} else {
		unix.Close(fd)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("RunKeeper: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("keeper still running after the engine's Close")
	}
}
