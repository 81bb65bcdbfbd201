package fs

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/imafs/imafs/imans"
)

// TestFairness: a namespace's reads beyond the bound wait for its own
// slots, never for another namespace's; an interrupted wait is EINTR; no
// state is left once a namespace's reads are done.
func TestFairness(t *testing.T) {
	f := NewFairness(1)
	flood, quiet := &imans.Namespace{}, &imans.Namespace{}
	ctx := context.Background()
	release, errno := f.acquire(ctx, flood)
	if errno != 0 {
		t.Fatal(errno)
	}
	// The flood's second read waits...
	got := make(chan func(), 1)
	go func() {
		r, _ := f.acquire(ctx, flood)
		got <- r
	}()
	select {
	case <-got:
		t.Fatal("a second read of the flooding namespace was not bounded")
	case <-time.After(50 * time.Millisecond):
	}
	// ...the quiet namespace's does not.
	done := make(chan struct{})
	go func() {
		r, errno := f.acquire(ctx, quiet)
		if errno == 0 {
			r()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the quiet namespace waited for the flooding one")
	}
	// An interrupted wait.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, errno := f.acquire(cctx, flood); errno != syscall.EINTR {
		t.Errorf("interrupted wait: %v, want EINTR", errno)
	}
	release()
	(<-got)()
	f.mu.Lock()
	left := len(f.slots)
	f.mu.Unlock()
	if left != 0 {
		t.Errorf("%d namespaces left in the bound's map", left)
	}
	// No bound: never waits.
	for _, nf := range []*Fairness{nil, NewFairness(0)} {
		r1, _ := nf.acquire(ctx, flood)
		r2, errno := nf.acquire(ctx, flood)
		if errno != 0 {
			t.Errorf("unbounded: %v", errno)
		}
		r1()
		r2()
	}
}
