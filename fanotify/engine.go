package fanotify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/nsresolve"
)

// Options configure an Engine.
type Options struct {
	// Registry is the registry of namespaces; measurements are recorded
	// through its Record. Required.
	Registry *imans.Registry
	// Resolver resolves event pids; nil means Registry.Resolver().
	Resolver *nsresolve.Resolver
	Log      *logrus.Logger
	// KeyDir holds one directory of trusted public keys per container:
	// KeyDir/<container id>/*.{pem,der,crt,cer,x509,pub}. Empty: no keys
	// (every signature fails to verify).
	KeyDir string
	// Workers bounds the events decided (hashed) at the same time across
	// all containers (default: number of CPUs, at least 2).
	Workers int
	// ContainerWorkers is the number of workers of each container (default
	// 2): a container waits on its own workers, never behind another
	// container's queue.
	ContainerWorkers int
	// QueueLen bounds the events of one container waiting for its workers
	// (default 1024). An event that finds the queue full is answered at once
	// by the failure mode; a flooding container only fills its own queue.
	QueueLen int
	// Timeout bounds the time to answer a permission event (default 30s);
	// when it passes, the event is answered by the failure mode.
	Timeout time.Duration
	// FailClosed returns whether a container's measurement failures deny
	// the access. Nil: containers whose policy has appraise rules fail
	// closed, the others fail open (and the failure is recorded as a
	// violation entry, so a verifier sees the list is incomplete).
	FailClosed func(ns *imans.Namespace) bool
	// Rescan is how often the mounts and key directories of watched
	// containers are checked for changes (default 250ms).
	Rescan time.Duration
	// PolicyPoll is how often their policies are checked (default 50ms): a
	// newly loaded FILE_CHECK rule widens the marks within this time.
	PolicyPoll time.Duration
	// Proc is the procfs mount to use (default "/proc").
	Proc string
	// Manual: do not register with the Registry as an observer nor watch
	// the containers already attached; the caller calls Watch/Unwatch.
	Manual bool
	// Keeper, when set, holds a duplicate of every container's group in a
	// process of its own (see RunKeeper): when this engine's daemon dies or
	// hands over (Suspend), the containers' accesses wait for the next
	// engine on the same keeper instead of being allowed unmeasured.
	Keeper *KeeperClient
	// OnAnswer, when set, is called once for every permission event the
	// engine answers, from the answering goroutine just before the task is
	// released (keep it quick): the daemon feeds its denial counters and
	// latency histogram from it.
	OnAnswer func(Answer)
	// Mmap, when set, appraises at their open the files appraised for MMAP_CHECK.
	Mmap MmapAppraiser
}

// Answer describes one answered permission event (Options.OnAnswer).
type Answer struct {
	Namespace string // id of the container whose watch received the event
	Allow     bool
	// Reason says why an access was denied, empty when it was allowed: an
	// appraisal failure's cause as the kernel's integrity audit names it
	// (appraise.Cause: "invalid-signature", "missing-key", ...), or the failure
	// mode's: ReasonCollectData, ReasonTimeout, ReasonOverflow, ReasonError.
	Reason  string
	Latency time.Duration // from reading the event to answering it
}

// Reasons for a denial by the failure mode (see Options.FailClosed).
const (
	ReasonCollectData = "collect_data" // the file could not be hashed
	ReasonTimeout     = "timeout"      // not decided within Options.Timeout
	ReasonOverflow    = "overflow"     // the container's queue was full
	ReasonError       = "error"        // anything else failed (resolve, stat, record)
)

// Stats are the engine's counters.
type Stats struct {
	Events     uint64 // permission events received
	Allowed    uint64
	Denied     uint64
	Measured   uint64 // entries recorded
	Cached     uint64 // events answered from the per-container cache
	Violations uint64 // violation entries recorded
	Errors     uint64 // events whose handling failed (answered by failure mode)
	Timeouts   uint64 // events answered by the timeout
	Overflows  uint64 // events answered because the queue was full
	Ignored    uint64 // ignore marks added
	// Latency is the total time from reading events to answering them
	// (Latency / (Allowed+Denied) is the mean time a task waited on us).
	Latency time.Duration
	// Pending is the number of events received and not yet answered (in
	// the containers' queues or being decided).
	Pending uint64
}

type counters struct {
	events, allowed, denied, measured, cached, violations, errors, timeouts, overflows, ignored atomic.Uint64
	latency                                                                                     atomic.Int64
}

// Engine measures and appraises files on fanotify permission events for
// the containers of a Registry. It is an imans.Observer.
type Engine struct {
	opts  Options
	log   *logrus.Logger
	reg   *imans.Registry
	res   *nsresolve.Resolver
	sem   chan struct{} // Workers tokens, held while deciding
	stats counters

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	unobserve func() // undoes the registration as the Registry's observer

	mu      sync.Mutex
	watches map[string]*watch
	opening map[string]int // watches being set up (their groups may be in the keeper already)
	closed  bool
}

var _ imans.Observer = (*Engine)(nil)

// New starts an engine: its workers, its registration as an observer of
// the Registry (every container attached from now on is watched) and
// watches of the containers already attached (unless Options.Manual).
func New(opts Options) (*Engine, error) {
	if opts.Registry == nil {
		return nil, errors.New("fanotify engine: no registry")
	}
	if opts.Resolver == nil {
		opts.Resolver = opts.Registry.Resolver()
	}
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	if opts.Workers <= 0 {
		opts.Workers = max(2, runtime.NumCPU())
	}
	if opts.ContainerWorkers <= 0 {
		opts.ContainerWorkers = 2
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 1024
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Rescan <= 0 {
		opts.Rescan = 250 * time.Millisecond
	}
	if opts.PolicyPoll <= 0 {
		opts.PolicyPoll = 50 * time.Millisecond
	}
	if opts.Proc == "" {
		opts.Proc = "/proc"
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{
		opts:    opts,
		log:     opts.Log,
		reg:     opts.Registry,
		res:     opts.Resolver,
		sem:     make(chan struct{}, opts.Workers),
		ctx:     ctx,
		cancel:  cancel,
		watches: map[string]*watch{},
		opening: map[string]int{},
	}
	e.wg.Add(1)
	go e.rescanLoop()
	if !opts.Manual {
		e.unobserve = opts.Registry.AddObserver(e)
		for _, ns := range opts.Registry.Namespaces() {
			e.Attached(ns)
		}
	}
	return e, nil
}

// errClosed: the engine was closed or suspended.
var errClosed = errors.New("engine closed")

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	c := &e.stats
	// Answers are loaded before events: an event is counted before it is
	// answered, so pending never goes below zero.
	allowed, denied := c.allowed.Load(), c.denied.Load()
	events := c.events.Load()
	return Stats{events, allowed, denied, c.measured.Load(), c.cached.Load(),
		c.violations.Load(), c.errors.Load(), c.timeouts.Load(), c.overflows.Load(), c.ignored.Load(),
		time.Duration(c.latency.Load()), events - allowed - denied}
}

// Attached starts watching ns (imans.Observer). Errors are logged: the
// container runs, unmeasured, and Watch can be retried.
func (e *Engine) Attached(ns *imans.Namespace) {
	// A closed engine stays a registry observer (a successor engine in the
	// same process watches instead): nothing to say.
	if err := e.Watch(ns); err != nil && !errors.Is(err, errClosed) {
		e.log.WithError(err).WithField("id", ns.ID).Error("fanotify: cannot watch container")
	}
}

// Detached stops watching ns (imans.Observer).
func (e *Engine) Detached(ns *imans.Namespace) { e.Unwatch(ns.ID) }

// Watch starts watching the file systems of container ns.
func (e *Engine) Watch(ns *imans.Namespace) error {
	if ns.IsHost() {
		return fmt.Errorf("fanotify watch %s: the host is not watched (see package doc)", ns.ID)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("fanotify watch %s: %w", ns.ID, errClosed)
	}
	if _, ok := e.watches[ns.ID]; ok {
		e.mu.Unlock()
		return nil
	}
	e.opening[ns.ID]++
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		if e.opening[ns.ID]--; e.opening[ns.ID] == 0 {
			delete(e.opening, ns.ID)
		}
		e.mu.Unlock()
	}()
	w, err := newWatch(e, ns)
	if err != nil {
		return fmt.Errorf("fanotify watch %s: %w", ns.ID, err)
	}
	e.mu.Lock()
	if _, dup := e.watches[ns.ID]; dup || e.closed {
		e.mu.Unlock()
		w.close()
		return nil
	}
	e.watches[ns.ID] = w
	e.mu.Unlock()
	if err := w.sync(); err != nil {
		e.log.WithError(err).WithField("id", ns.ID).Warn("fanotify: initial marks incomplete")
	}
	if w.takenOver {
		w.answerStale()
	}
	e.wg.Add(1 + e.opts.ContainerWorkers)
	w.running.Add(1 + e.opts.ContainerWorkers)
	go func() {
		defer e.wg.Done()
		defer w.running.Done()
		w.read()
		close(w.queue) // the reader is the only sender
	}()
	for i := 0; i < e.opts.ContainerWorkers; i++ {
		go func() {
			defer e.wg.Done()
			defer w.running.Done()
			w.work()
		}()
	}
	e.log.WithFields(logrus.Fields{"id": ns.ID, "pid": ns.Init, "taken_over": w.takenOver}).Info("fanotify: watching container")
	return nil
}

// Unwatch stops watching container id. Closing its group (and the
// keeper's duplicate) lets the kernel allow every event still pending in it.
func (e *Engine) Unwatch(id string) {
	e.mu.Lock()
	w, ok := e.watches[id]
	delete(e.watches, id)
	closed := e.closed
	e.mu.Unlock()
	if ok {
		w.close()
	}
	// Also when the watch failed after its group went to the keeper; not
	// once this engine is closed (the groups are its successor's then).
	if k := e.opts.Keeper; k != nil && !closed {
		if err := k.Del(id); err != nil {
			e.log.WithError(err).WithField("id", id).Warn("fanotify: keeper: release group")
		}
	}
}

// groupFor returns the group for ns: the keeper's, when it holds one (a
// previous daemon's: takenOver, with the highest event descriptor that
// daemon reported), else a new one, of which the keeper gets a duplicate.
func (e *Engine) groupFor(ns *imans.Namespace) (g *group, takenOver bool, highWater int, err error) {
	k := e.opts.Keeper
	if k != nil {
		fd, hw, err := k.Get(ns.ID)
		switch {
		case err != nil:
			e.log.WithError(err).WithField("id", ns.ID).Warn("fanotify: keeper: take over group; making a new one")
		case fd >= 0:
			unix.CloseOnExec(fd)
			return &group{f: os.NewFile(uintptr(fd), "fanotify")}, true, hw, nil
		}
	}
	g, err = newGroup()
	if err != nil {
		return nil, false, 0, err
	}
	if k != nil {
		if err := k.Put(ns.ID, g.fd()); err != nil {
			e.log.WithError(err).WithField("id", ns.ID).Warn("fanotify: keeper: deposit group (should this daemon die, the container's accesses are allowed unmeasured)")
		}
	}
	return g, false, 0, nil
}

// staleMargin: descriptor numbers answered beyond a previous daemon's
// high-water mark (it reports a new mark after reading, so a crash right
// after a read can leave a few events above it).
const staleMargin = 1024

// staleName is the name of the violation entry recorded for an event a
// previous daemon read and never answered, which the successor allows
// unmeasured (the file is unknown: its descriptor died with that daemon).
const staleName = "<unanswered-by-previous-daemon>"

// answerStale answers the events of a taken-over group that the previous
// daemon read and did not answer, by the failure mode. It runs before this
// engine reads the group: every event then waiting for an answer is one of
// those. The kernel matches an answer by descriptor number only.
func (w *watch) answerStale() {
	allow, _ := w.failureMode(ReasonError)
	n := answerStale(w.g, w.highWater, allow)
	if n == 0 {
		return
	}
	w.log.WithFields(logrus.Fields{"events": n, "allow": allow}).Warn("fanotify: answered events the previous daemon read and never answered")
	if allow {
		for range n {
			w.violation(w.ns.Template(), imans.DefaultPCR, w.noFileViolation(staleName), "daemon_restart", w.log)
		}
	}
}

// answerStale answers, with allow, every event of g awaiting an answer
// under a descriptor number up to highWater+staleMargin, and returns how
// many there were.
func answerStale(g *group, highWater int, allow bool) int {
	n := 0
	for fd := 0; fd <= highWater+staleMargin; fd++ {
		if g.respond(int32(fd), allow) == nil {
			n++
		}
	}
	return n
}

// Sync re-reads ns's policy and mounts now and updates its marks (the
// rescan loop does this every Options.Rescan).
func (e *Engine) Sync(ns *imans.Namespace) error {
	e.mu.Lock()
	w, ok := e.watches[ns.ID]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("fanotify sync %s: not watched", ns.ID)
	}
	return w.sync()
}

// Close stops every watch and its workers; pending events are allowed by
// the kernel as their groups close (with a keeper: it releases them too,
// and exits).
func (e *Engine) Close() error {
	ws := e.stopWatching()
	for _, w := range ws {
		w.close()
	}
	e.cancel()
	e.wg.Wait()
	if k := e.opts.Keeper; k != nil {
		err := k.Release()
		k.Close()
		if err != nil {
			return fmt.Errorf("fanotify: keeper: release: %w", err)
		}
	}
	return nil
}

// stopWatching marks the engine closed and takes its watches.
func (e *Engine) stopWatching() map[string]*watch {
	if e.unobserve != nil {
		e.unobserve()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	ws := e.watches
	e.watches = map[string]*watch{}
	return ws
}

// Suspend stops the engine for a successor on the same keeper (a daemon's
// upgrade): it stops reading events, decides and answers those it has
// read, and closes its descriptors; the groups stay open in the keeper,
// with their marks, and the events that arrive meanwhile wait in them for
// the successor. Without a keeper it is Close.
func (e *Engine) Suspend() error {
	k := e.opts.Keeper
	if k == nil {
		return e.Close()
	}
	ws := e.stopWatching()
	for _, w := range ws {
		w.g.f.SetReadDeadline(time.Now()) // the reader returns; workers drain its queue
	}
	for _, w := range ws {
		w.running.Wait()
		w.close()
	}
	e.cancel()
	e.wg.Wait()
	return k.Close()
}

// ReleaseUnwatched makes the keeper release the groups of containers this
// engine does not watch: those of a previous daemon's containers that
// exited while no daemon ran. Call it once the previous daemon's containers
// are restored.
func (e *Engine) ReleaseUnwatched() error {
	k := e.opts.Keeper
	if k == nil {
		return nil
	}
	// Held across the request: a watch that starts meanwhile deposits its
	// group only after the keeper has dropped the others.
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := make([]string, 0, len(e.watches)+len(e.opening))
	for id := range e.watches {
		ids = append(ids, id)
	}
	for id := range e.opening {
		ids = append(ids, id)
	}
	return k.Keep(ids)
}

func (e *Engine) rescanLoop() {
	defer e.wg.Done()
	t := time.NewTicker(e.opts.PolicyPoll)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		full := time.Since(last) >= e.opts.Rescan
		if full {
			last = time.Now()
		}
		e.mu.Lock()
		ws := make([]*watch, 0, len(e.watches))
		for _, w := range e.watches {
			ws = append(ws, w)
		}
		e.mu.Unlock()
		for _, w := range ws {
			w.refreshPolicy()
			if !full && !w.takeRemark() {
				continue
			}
			if err := w.sync(); err != nil {
				w.log.WithError(err).Debug("fanotify: rescan")
			}
		}
	}
}
