package daemon

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/metrics"
	"github.com/imafs/imafs/mmapsrc"
	"github.com/imafs/imafs/nsresolve"
	"github.com/imafs/imafs/policy"
)

// mmapPolicyPoll is how often the mmap source looks for policy loads (a
// load makes every file of the container report again).
const mmapPolicyPoll = 50 * time.Millisecond

// mmapSource measures the files the containers' tasks map executable
// (MMAP_CHECK, MMAP_CHECK_REQPROT) with package mmapsrc: it watches each
// attached container's pid namespace and records each reported mapping in
// the container's list under the path the container sees; what it cannot
// measure becomes a violation entry. See docs/mmap-source.md.
type mmapSource struct {
	cfg    MmapConfig
	fan    *fanotifySource // auto: on when the fanotify engine runs
	status *sourceStatus

	// Set by Start, cleared by Stop (the start list serialises them).
	src        *mmapsrc.Source
	reg        *imans.Registry
	res        *nsresolve.Resolver
	log        *logrus.Logger
	unobserve  func()
	unregister func()
	loop, poll *goroutine

	mu      sync.Mutex
	watches map[string]*mmapWatch // by container id
	closing bool                  // Stop began: no new watch

	causes map[mmapCauseKey]string // appraisal failures (mmap_appraise.go)

	events, measured, violations, errors, refused atomic.Uint64
}

// mmapWatch is one watched container.
type mmapWatch struct {
	ns           *imans.Namespace
	pidns, mntns uint64
	unwatch      func() error
	uids, gids   fanotify.IDMap
	src          *mmapsrc.Source
	enforced     atomic.Bool // its mount namespace is appraised in the kernel

	mu         sync.Mutex
	policy     policy.Policy // the policy last seen (by rule identity)
	seen       bool
	appraising bool // it appraises MMAP_CHECK
}

func (m *mmapSource) Name() string { return "mmap" }

// enabled reports whether the source is to run and whether a failure to
// load it is fatal.
func (m *mmapSource) enabled() (on, required bool, err error) {
	switch m.cfg.Mode {
	case "", "off":
		return false, false, nil
	case "on":
		return true, true, nil
	case "auto":
		return m.fan.running(), false, nil
	}
	return false, false, fmt.Errorf("--mmap %q: want auto, on or off", m.cfg.Mode)
}

func (m *mmapSource) Start(env *Env) error {
	on, required, err := m.enabled()
	if !on {
		m.status.set("mmap", "off")
		return err
	}
	src, err := mmapsrc.Open(mmapsrc.Options{Log: env.Log, Proc: m.cfg.Proc})
	if err != nil {
		m.status.set("mmap", "unavailable")
		if required {
			return fmt.Errorf("mmap source (--mmap on): %w", err)
		}
		env.Log.WithError(err).WithFields(logrus.Fields{"extension": m.Name(), "mode": m.cfg.Mode}).
			Warn("mmap source unavailable: files mapped executable (MMAP_CHECK) in containers are not measured")
		return nil
	}
	m.reg, m.res, m.log = env.Reg, env.Reg.Resolver(), env.Log
	m.mu.Lock()
	m.src, m.watches, m.closing, m.causes = src, map[string]*mmapWatch{}, false, nil
	m.mu.Unlock()
	m.unregister = metrics.RegisterSource("mmap", func() metrics.SourceStats {
		return metrics.SourceStats{Events: m.events.Load(), Measured: m.measured.Load(), Errors: m.errors.Load(), Denied: m.refused.Load()}
	})
	m.loop = spawn(func(context.Context) {
		for ev := range src.Events() {
			m.handle(&ev)
		}
	})
	m.unobserve = env.Reg.AddObserver(m)
	for _, ns := range env.Reg.Namespaces() {
		m.Attached(ns)
	}
	m.poll = spawn(m.pollPolicies)
	mech := src.Mechanism()
	m.status.set("mmap", string(mech))
	env.Log.WithFields(logrus.Fields{"extension": m.Name(), "mechanism": mech, "can_deny": mech.CanDeny()}).Info("started")
	return nil
}

// Stop closes the source (its programs, maps and watches go with it); the
// events it already delivered are handled first, with the containers still
// known (the registry stops after the sources).
func (m *mmapSource) Stop(bool) {
	if m.src == nil {
		return
	}
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	m.poll.stop()
	m.unobserve()
	if err := m.src.Close(); err != nil {
		m.log.WithError(err).Warn("mmap source: close")
	}
	m.loop.stop() // returns once Events is drained and closed
	m.mu.Lock()
	m.watches, m.src = nil, nil
	m.mu.Unlock()
	m.unregister()
	m.status.set("mmap", "off")
	m.loop, m.poll, m.unobserve, m.unregister = nil, nil, nil, nil
}

// Attached watches ns's pid namespace (an imans.Observer; also called for
// the containers attached before Start, so it may come twice).
func (m *mmapSource) Attached(ns *imans.Namespace) {
	if ns.IsHost() {
		return
	}
	m.mu.Lock()
	if w, ok := m.watches[ns.ID]; m.closing || ok && w.ns == ns {
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	w := &mmapWatch{ns: ns, pidns: ns.Pinned.PidNS.Ino, mntns: ns.Pinned.MntNS.Ino, src: m.src}
	log := m.log.WithFields(logrus.Fields{"id": ns.ID, "pidns": w.pidns})
	var err error
	if w.uids, err = fanotify.ReadIDMap(fmt.Sprintf("/proc/%d/uid_map", ns.Init)); err != nil {
		log.WithError(err).Warn("mmap source: uid map (ids as the host sees them)")
	}
	if w.gids, err = fanotify.ReadIDMap(fmt.Sprintf("/proc/%d/gid_map", ns.Init)); err != nil {
		log.WithError(err).Warn("mmap source: gid map (ids as the host sees them)")
	}
	if w.unwatch, err = m.src.Watch(w.pidns); err != nil {
		// Every mapping of this container goes unmeasured: its list says so.
		m.errors.Add(1)
		log.WithError(err).Error("mmap source: cannot watch the container")
		m.violation(ns, ns.Template(), imans.DefaultPCR, MmapUnwatchedName, "unwatched", log)
		return
	}
	m.mu.Lock()
	if old, ok := m.watches[ns.ID]; m.closing || ok && old.ns == ns { // stopping, or a concurrent Attached won
		m.mu.Unlock()
		return
	}
	m.watches[ns.ID] = w
	m.mu.Unlock()
	m.refresh(w)
	log.Debug("mmap source: watching")
}

// Detached stops watching ns and forgets what its mount namespace mapped.
func (m *mmapSource) Detached(ns *imans.Namespace) {
	m.mu.Lock()
	w, ok := m.watches[ns.ID]
	ok = ok && w.ns == ns && !m.closing
	if ok {
		delete(m.watches, ns.ID)
	}
	m.mu.Unlock()
	if !ok {
		return
	}
	if err := w.unwatch(); err != nil {
		m.log.WithError(err).WithField("id", ns.ID).Warn("mmap source: unwatch")
	}
	if err := m.enforce(w, false); err != nil {
		m.log.WithError(err).WithField("id", ns.ID).Warn("mmap source: stop appraising the mount namespace")
	}
	if !m.sharedMntNS(w.mntns) {
		if err := m.src.ForgetMntNS(w.mntns); err != nil {
			m.log.WithError(err).WithField("id", ns.ID).Warn("mmap source: forget")
		}
	}
}

// sharedMntNS reports whether a watched container has mount namespace mntns.
func (m *mmapSource) sharedMntNS(mntns uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.watches {
		if w.mntns == mntns {
			return true
		}
	}
	return false
}

// pollPolicies notices policy loads of the watched containers.
func (m *mmapSource) pollPolicies(ctx context.Context) {
	t := time.NewTicker(mmapPolicyPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		ws := make([]*mmapWatch, 0, len(m.watches))
		for _, w := range m.watches {
			ws = append(ws, w)
		}
		m.mu.Unlock()
		for _, w := range ws {
			m.refresh(w)
		}
	}
}

// refresh notices a policy load of w's container: its files are
// evaluated again at their next mapping (ForgetMntNS), and its mount
// namespace is appraised in the kernel while the policy appraises
// MMAP_CHECK (enforce); where that cannot be enforced, the log and the
// container's list say so.
func (m *mmapSource) refresh(w *mmapWatch) {
	p := w.ns.Policy()
	w.mu.Lock()
	if w.seen && slices.Equal(p, w.policy) {
		w.mu.Unlock()
		return
	}
	first := !w.seen
	w.seen, w.policy = true, p
	was := w.appraising
	w.appraising = appraisesMmap(p)
	now := w.appraising
	w.mu.Unlock()
	if !first {
		if err := w.src.ForgetMntNS(w.mntns); err != nil {
			m.log.WithError(err).WithField("id", w.ns.ID).Warn("mmap source: forget after a policy load")
		}
	}
	log := m.log.WithFields(logrus.Fields{"id": w.ns.ID, "mechanism": w.src.Mechanism(), "hooks": "MMAP_CHECK,MMAP_CHECK_REQPROT"})
	err := m.enforce(w, now)
	switch {
	case now && err == nil && !was:
		log.Info("mmap source: the policy appraises executable mappings: files are appraised at their open, other mappings refused")
	case now && err != nil && !was:
		log.WithError(err).Warn("mmap source: the policy appraises executable mappings, which cannot be enforced here: mappings are measured, never refused")
		m.violation(w.ns, w.ns.Template(), imans.DefaultPCR, MmapAppraiseUnenforcedName, "appraise-unenforced", log)
	case !now && err != nil:
		log.WithError(err).Warn("mmap source: stop appraising the mount namespace")
	}
}

// mmapFuncs are the hooks of an executable mapping, in the kernel's order
// (ima_file_mmap: the requested protection, then the applied one; on the
// kernels this source runs on they are the same).
var mmapFuncs = []policy.Func{policy.MMAPCheckReqprot, policy.MMAPCheck}

// usesMmap reports whether p measures executable mappings.
func usesMmap(p policy.Policy) bool {
	for _, fn := range mmapFuncs {
		if p.Uses(fn, policy.Measure|policy.Appraise) {
			return true
		}
	}
	return false
}

// appraisesMmap reports whether p appraises executable mappings.
func appraisesMmap(p policy.Policy) bool {
	for _, fn := range mmapFuncs {
		if p.Uses(fn, policy.Appraise) {
			return true
		}
	}
	return false
}

// dependsOnCaller reports whether p's decision for a mapping can differ
// between two tasks of one container: a condition on the task's ids or LSM
// subject. (The access mask of a mapping is always MAY_EXEC, as an exec's:
// Rule.DependsOnCaller is asked as for BPRM_CHECK.)
func dependsOnCaller(p policy.Policy) bool {
	for _, r := range p {
		for _, fn := range mmapFuncs {
			if r.AppliesTo(fn) && r.DependsOnCaller(policy.BPRMCheck) {
				return true
			}
		}
	}
	return false
}
