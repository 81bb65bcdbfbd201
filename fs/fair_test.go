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

// fakeClock is a Fairness clock the test moves, recording the waits (a
// wait moves it too).
type fakeClock struct {
	t     time.Time
	waits []time.Duration
}

func (c *fakeClock) install(f *Fairness) {
	f.now = func() time.Time { return c.t }
	f.sleep = func(_ context.Context, d time.Duration) { c.waits = append(c.waits, d); c.t = c.t.Add(d) }
}

// TestFairnessShare: a namespace over its share waits as long as its READ
// took, only while another namespace reads; a light one never waits.
func TestFairnessShare(t *testing.T) {
	heavyRead := 3 * time.Millisecond
	for _, tc := range []struct {
		name      string
		reads     int           // READs by the flooding namespace
		readTime  time.Duration // each
		otherAgo  time.Duration // the quiet namespace's last READ before them (-1: never; -2: never, and another namespace reads as much)
		wantWaits int
	}{
		{"alone, never slowed", 10, heavyRead, -1, 0},
		{"under its share", 2, time.Millisecond, 0, 0},
		// Over 2.5 ms of READs in the window makes it heavy: from the 1st
		// READ on, until the quiet READ is contendedFor old (3 ms READs,
		// 3 ms waits: the 8th READ ends at 45 ms).
		{"over its share while another reads", 10, heavyRead, 0, 8},
		{"another read long ago", 10, heavyRead, contendedFor + time.Second, 0},
		{"another reads alike", 10, heavyRead, -2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFairness(1)
			clock := &fakeClock{t: time.Unix(1000, 0)}
			clock.install(f)
			flood, quiet := &imans.Namespace{}, &imans.Namespace{}
			read := func(ns *imans.Namespace, d time.Duration) {
				done, errno := f.acquire(context.Background(), ns)
				if errno != 0 {
					t.Fatal(errno)
				}
				clock.t = clock.t.Add(d)
				done()
			}
			if tc.otherAgo >= 0 {
				read(quiet, time.Microsecond)
				clock.t = clock.t.Add(tc.otherAgo)
			}
			other := &imans.Namespace{}
			for range tc.reads {
				read(flood, tc.readTime)
				if tc.otherAgo == -2 {
					read(other, heavyRead)
				}
			}
			if len(clock.waits) != tc.wantWaits {
				t.Fatalf("%d waits, want %d: %v", len(clock.waits), tc.wantWaits, clock.waits)
			}
			for _, w := range clock.waits {
				if w != tc.readTime {
					t.Errorf("waited %v, want the READ's %v", w, tc.readTime)
				}
			}
			// The quiet namespace is under its share: it never waits.
			n := len(clock.waits)
			read(quiet, time.Microsecond)
			if len(clock.waits) != n {
				t.Errorf("the light namespace waited")
			}
		})
	}
}
