package vtpm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/measurelog"
)

func newTestManager(t *testing.T) (*Manager, string) {
	t.Helper()
	needSWTPM(t)
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	state := t.TempDir()
	m, err := NewManager(ManagerOptions{StateDir: state, SocketDir: t.TempDir(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, state
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestManager(t *testing.T) {
	m, state := newTestManager(t)
	lists := map[string]*measurelog.List{}
	for _, id := range []string{"c1", "weird/../id with spaces"} {
		l := measurelog.NewList()
		entries := testEntries(t, id, 10)
		for _, e := range entries[:4] { // restored from the journal
			l.Append(e)
		}
		if err := m.Attach(id, l); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries[4:] { // measured after the attach
			l.Append(e)
		}
		lists[id] = l
	}
	if err := m.Attach("c1", lists["c1"]); err == nil {
		t.Error("second Attach of c1: no error")
	}
	if got := m.IDs(); len(got) != 2 {
		t.Errorf("IDs() = %v", got)
	}
	for id, l := range lists {
		b, err := m.Quote(id, []byte(id))
		if err != nil {
			t.Fatal(err)
		}
		if b.Entries != l.Len() {
			t.Errorf("%s: bundle has %d entries, list %d", id, b.Entries, l.Len())
		}
		if err := Verify(b, []byte(id), WithID(id)); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		got, err := m.PCR(id, measurelog.SHA256, 10)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, l.PCR(measurelog.SHA256, 10)) {
			t.Errorf("%s: vTPM PCR 10 %x, list %x", id, got, l.PCR(measurelog.SHA256, 10))
		}
	}
	// Only plain names become directory names.
	entries, _ := os.ReadDir(state)
	for _, e := range entries {
		if e.Name() != "c1" && (len(e.Name()) != 35 || e.Name()[:3] != "id-") {
			t.Errorf("state directory entry %q", e.Name())
		}
	}

	// The swtpm dies: the manager restarts it and replays the list.
	v, err := m.get("c1")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(v.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the vTPM to be restarted", func() bool {
		nv, err := m.get("c1")
		return err == nil && nv != v
	})
	more := testEntries(t, "c1-more", 3)[1:]
	for _, e := range more {
		lists["c1"].Append(e)
	}
	b, err := m.Quote("c1", []byte("after crash"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Entries != lists["c1"].Len() {
		t.Errorf("after restart: bundle has %d entries, list %d", b.Entries, lists["c1"].Len())
	}
	if err := Verify(b, []byte("after crash")); err != nil {
		t.Errorf("after restart: %v", err)
	}

	// Detach stops the swtpm and removes its state.
	v, _ = m.get("c1")
	pid := v.Pid()
	if err := m.Detach("c1"); err != nil {
		t.Fatal(err)
	}
	assertGone(t, pid)
	if _, err := os.Stat(filepath.Join(state, "c1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state of c1 after Detach: %v", err)
	}
	if _, err := m.Quote("c1", []byte("x")); !errors.Is(err, ErrUnknownNamespace) {
		t.Errorf("Quote after Detach: %v, want ErrUnknownNamespace", err)
	}
	if err := m.Detach("c1"); !errors.Is(err, ErrUnknownNamespace) {
		t.Errorf("second Detach: %v", err)
	}
}
