package kernelsrc

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imafs/imafs/measurelog"
)

// runUntil tails path into reg until reg has recorded n entries, then stops.
func runUntil(t *testing.T, reg *fakeRegistry, opts Options, n int) {
	t.Helper()
	s := New(reg, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for reg.count() < n {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("recorded %d entries, want %d", reg.count(), n)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // a wrong extra record would show now
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestCursorResume: a restarted daemon resumes after the kernel entries it
// already recorded in this boot (a violation must not count twice), and
// starts over in a new boot.
func TestCursorResume(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "binary_runtime_measurements")
	bootID := filepath.Join(dir, "boot_id")
	if err := os.WriteFile(bootID, []byte("boot-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	violation, err := measurelog.NewViolation(measurelog.TemplateIMANS, 10, "/etc/shadow", measurelog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	before := []*measurelog.Entry{kernelEntry(t, "/bin/a", "c1"), violation, kernelEntry(t, "/bin/b", "")}
	if err := os.WriteFile(list, binaryList(before...), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := Options{
		ListPath: list, CursorPath: filepath.Join(dir, "kernel.cursor"), BootIDPath: bootID,
		MinInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, Log: quietLog(),
	}
	first := newFakeRegistry("c1")
	runUntil(t, first, opts, 3)

	// The kernel list grows while no daemon runs; the next daemon records
	// only the new entry.
	f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(binaryList(kernelEntry(t, "/bin/c", "c1"))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	second := newFakeRegistry("c1")
	runUntil(t, second, opts, 1)
	if got := second.count(); got != 1 {
		t.Errorf("restarted source recorded %d entries, want 1 (only the new one)", got)
	}
	if got := names(second.containers["c1"].List); len(got) != 1 || got[0] != "/bin/c[]" {
		t.Errorf("c1 after restart = %v, want [/bin/c[]] (ima-ng)", got)
	}
	if v := second.host.List.Violations(); v != 0 {
		t.Errorf("violation recorded again after restart: %d", v)
	}

	// A new boot: the cursor of the old one does not apply.
	if err := os.WriteFile(bootID, []byte("boot-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	third := newFakeRegistry("c1")
	runUntil(t, third, opts, 4)
	if got := third.count(); got != 4 {
		t.Errorf("source of a new boot recorded %d entries, want all 4", got)
	}
}
