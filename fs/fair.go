package fs

import (
	"context"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/imafs/imafs/imans"
)

// Fairness shares the daemon between containers reading their lists. Each
// container has its own FUSE connection and the Go runtime schedules every
// request alike, so list READs follow two rules:
//
//   - A bound: at most limit READs of one namespace are rendered at once;
//     the others queue behind their own namespace (a flood of 16 readers is
//     one READ in the daemon, not 16). An interrupted wait answers EINTR.
//   - A share: while another namespace is reading (a READ arrived within
//     contendedFor), a namespace whose READs took more than heavyAfter in
//     the last one to two shareWindows, and more than twice the other's,
//     waits after each READ as long as the READ took, keeping its slot: it
//     gets at most half of a CPU per slot, and the CPU it leaves serves the
//     others' requests at once instead of after a wake-up queue
//     (docs/benchmarks.md, issue 11).
//
// A namespace reading alone is never slowed. Slots exist while a namespace
// has reads in flight; its READ time is forgotten after forgetAfter.
type Fairness struct {
	limit int

	mu     sync.Mutex
	slots  map[*imans.Namespace]*nsSlots
	use    map[*imans.Namespace]*nsUse
	recent [2]nsStart // the latest READ arrivals of two distinct namespaces, newest first
	pruned time.Time

	now   func() time.Time                           // tests replace the clock
	sleep func(ctx context.Context, d time.Duration) // and the wait
}

type nsSlots struct {
	sem   chan struct{}
	users int // reads holding or waiting for a slot
}

// nsUse is a namespace's READ time in the current and the previous window.
type nsUse struct {
	win       int64 // index of the current window
	cur, prev time.Duration
	last      time.Time // its latest READ's arrival
}

type nsStart struct {
	ns *imans.Namespace
	at time.Time
}

const (
	shareWindow  = 20 * time.Millisecond
	heavyAfter   = shareWindow / 8 // 6-12 % of a CPU over the last 20-40 ms
	contendedFor = 50 * time.Millisecond
	forgetAfter  = time.Second
)

// DefaultReadsPerNamespace is the default bound: half the daemon's CPUs (at
// least 1), so one container never has them all.
var DefaultReadsPerNamespace = max(1, runtime.GOMAXPROCS(0)/2)

// DefaultFairness is the bound every tree shares unless Options.Fair says
// otherwise: containers are served fairly across all of the daemon's mounts.
var DefaultFairness = NewFairness(DefaultReadsPerNamespace)

// NewFairness returns a bound of perNamespace concurrent reads per
// namespace, with the share; 0 or less means neither.
func NewFairness(perNamespace int) *Fairness {
	return &Fairness{limit: perNamespace, slots: map[*imans.Namespace]*nsSlots{},
		use: map[*imans.Namespace]*nsUse{}, now: time.Now, sleep: sleepCtx}
}

// acquire waits for a read slot of ns; the returned function accounts the
// READ, waits if ns is over its share (see Fairness) and gives the slot
// back.
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
	f.arrived(ns, f.now())
	f.mu.Unlock()
	select {
	case s.sem <- struct{}{}:
		start := f.now()
		return func() {
			if d := f.now().Sub(start); f.overShare(ns, d) {
				f.sleep(ctx, d)
			}
			<-s.sem
			f.leave(ns, s)
		}, 0
	case <-ctx.Done():
		f.leave(ns, s)
		return nil, syscall.EINTR
	}
}

// arrived records that a READ of ns arrived at now (another namespace
// reading contends from then on, also while ns waits for a slot). f.mu is
// held.
func (f *Fairness) arrived(ns *imans.Namespace, now time.Time) {
	f.usage(ns, now).last = now
	if f.recent[0].ns != ns {
		f.recent[1] = f.recent[0]
	}
	f.recent[0] = nsStart{ns, now}
}

// overShare adds a READ of d to ns's time and reports whether ns is over
// its share: heavy, and reading more than twice as much as the namespace
// that read last besides it, within contendedFor. Two namespaces reading
// alike do not slow each other (the daemon stays busy).
func (f *Fairness) overShare(ns *imans.Namespace, d time.Duration) bool {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.usage(ns, now)
	u.cur += d
	if u.cur+u.prev <= heavyAfter {
		return false
	}
	other := f.recent[0]
	if other.ns == ns {
		other = f.recent[1]
	}
	if other.ns == nil || now.Sub(other.at) >= contendedFor {
		return false
	}
	o := f.usage(other.ns, now)
	return u.cur+u.prev > 2*(o.cur+o.prev)
}

// usage returns ns's READ time, rolled to now's window; it forgets the
// namespaces that did not read for forgetAfter (a scan per forgetAfter).
// f.mu is held.
func (f *Fairness) usage(ns *imans.Namespace, now time.Time) *nsUse {
	if now.Sub(f.pruned) > forgetAfter {
		for o, u := range f.use {
			if now.Sub(u.last) > forgetAfter {
				delete(f.use, o)
			}
		}
		for i, r := range f.recent {
			if now.Sub(r.at) > forgetAfter {
				f.recent[i] = nsStart{}
			}
		}
		f.pruned = now
	}
	u := f.use[ns]
	if u == nil {
		u = &nsUse{last: now}
		f.use[ns] = u
	}
	switch w := now.UnixNano() / int64(shareWindow); w - u.win {
	case 0:
	case 1:
		u.win, u.prev, u.cur = w, u.cur, 0
	default:
		u.win, u.prev, u.cur = w, 0, 0
	}
	return u
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

// sleepCtx waits d or until ctx ends (the READ was interrupted).
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
