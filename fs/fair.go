package fs

import (
	"context"
	"runtime"
	"sync"
	"syscall"

	"github.com/imafs/imafs/imans"
)

// Fairness bounds how many list reads of one namespace are served at once,
// so that a container flooding its lists queues behind itself instead of
// taking every CPU of the daemon from the others. Each container has its own
// FUSE connection and the Go runtime schedules every request alike: without
// a bound, 16 concurrent readers of a multi-MB list in one container leave
// another container's request one runnable goroutine among 17. A read waits
// for a slot of its namespace (one READ request, at most 128 KiB: slots turn
// over quickly, so the flood's own readers still take turns); an interrupted
// wait answers EINTR. Slots exist only while a namespace has reads in
// flight.
type Fairness struct {
	limit int

	mu    sync.Mutex
	slots map[*imans.Namespace]*nsSlots
}

type nsSlots struct {
	sem   chan struct{}
	users int // reads holding or waiting for a slot
}

// DefaultReadsPerNamespace is the default bound: half the daemon's CPUs (at
// least 1), so one container never has them all.
var DefaultReadsPerNamespace = max(1, runtime.GOMAXPROCS(0)/2)

// DefaultFairness is the bound every tree shares unless Options.Fair says
// otherwise: containers are served fairly across all of the daemon's mounts.
var DefaultFairness = NewFairness(DefaultReadsPerNamespace)

// NewFairness returns a bound of perNamespace concurrent reads per
// namespace; 0 or less means no bound.
func NewFairness(perNamespace int) *Fairness {
	return &Fairness{limit: perNamespace, slots: map[*imans.Namespace]*nsSlots{}}
}

// acquire waits for a read slot of ns; the returned function gives it back.
func (f *Fairness) acquire(ctx context.Context, ns *imans.Namespace) (func(), syscall.Errno) {
	if f == nil || f.limit <= 0 {
		return func() {}, 0
	}
	f.mu.Lock()
	s := f.slots[ns]
	if s == nil {
		s = &nsSlots{sem: make(chan struct{}, f.limit)}
		f.slots[ns] = s
	}
	s.users++
	f.mu.Unlock()
	select {
	case s.sem <- struct{}{}:
		return func() { <-s.sem; f.leave(ns, s) }, 0
	case <-ctx.Done():
		f.leave(ns, s)
		return nil, syscall.EINTR
	}
}

// alone reports whether ns is the only namespace with reads in flight (or
// there is no bound): a read of ns may then use every CPU.
func (f *Fairness) alone(ns *imans.Namespace) bool {
	if f == nil || f.limit <= 0 {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, in := f.slots[ns]
	return len(f.slots) == 1 && in
}

func (f *Fairness) leave(ns *imans.Namespace, s *nsSlots) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.users--; s.users == 0 {
		delete(f.slots, ns)
	}
}
