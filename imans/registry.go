package imans

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/nsresolve"
	"github.com/imafs/imafs/policy"
)

// Errors of registry operations, to be tested with errors.Is.
var (
	ErrExists     = errors.New("already registered")
	ErrNotFound   = errors.New("not registered")
	ErrHostPidNS  = errors.New("process shares the host pid namespace")
	ErrInvalidID  = errors.New("invalid container id")
	ErrDetached   = errors.New("namespace detached")
	ErrNotRunning = errors.New("process is not running")
)

// OCIConfigName is the name of the ima-buf entry that measures a container's
// OCI config at attach.
const OCIConfigName = "oci-config"

// Options configure a Registry.
type Options struct {
	// DefaultContainerPolicy is the policy a container starts with.
	DefaultContainerPolicy policy.Policy
	// HostPolicy is the host namespace's policy (empty unless set).
	HostPolicy policy.Policy
	Algo       measurelog.Algo // file hash algorithm (default sha256)
	Template   string          // default template (default ima-ng)
	// StateDir, when set, makes everything durable: every list is
	// journaled there before Record returns, policies and attach records
	// are saved, and a new Registry replays the host's journal (Restore
	// brings the containers back). Empty: everything is in memory.
	StateDir string
	Log      *logrus.Logger
	// Resolver resolves callers; nil means a new one.
	Resolver *nsresolve.Resolver
	// BootAggregate returns the boot_aggregate digest in algo; nil (or an
	// error) means no TPM: an all-zero digest, like a kernel without a TPM.
	BootAggregate func(algo measurelog.Algo) ([]byte, error)
	// PolicyLimits bound each namespace's policy (zero fields: the
	// policy package's defaults); a load beyond them fails with ENOSPC.
	PolicyLimits policy.Limits
	// StartPolicy, when set, may give a container its starting policy
	// from its OCI config (ocipolicy: annotations): rules are applied as
	// the container's first policy load (saved; later loads append) before
	// any observer sees it; nil rules keep DefaultContainerPolicy; an error
	// fails the attach with nothing registered.
	StartPolicy func(id string, ociConfig []byte) (policy.Policy, error)
}

// Registry holds the host namespace and every registered container.
type Registry struct {
	opts     Options
	log      *logrus.Logger
	resolver *nsresolve.Resolver
	host     *Namespace

	mu        sync.RWMutex
	byID      map[string]*Namespace
	byPidNS   map[nsresolve.NSID]*Namespace
	observers []Observer

	recordMu sync.Mutex // one writer for every list: the host list's order is the record order

	state *state // nil without a state directory
	watch *watcher
}

// Observer is told about attach and detach (measurement sources watch new
// containers this way). Calls are made without registry locks held.
type Observer interface {
	Attached(ns *Namespace)
	Detached(ns *Namespace)
}

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// NewRegistry returns a registry holding only the host namespace.
func NewRegistry(opts Options) (*Registry, error) {
	if opts.Algo == 0 {
		opts.Algo = measurelog.SHA256
	}
	if opts.Template == "" {
		opts.Template = "ima-ng"
	}
	if _, err := measurelog.LookupTemplate(opts.Template); err != nil {
		return nil, fmt.Errorf("new registry: template %q: %w", opts.Template, err)
	}
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	if opts.Resolver == nil {
		opts.Resolver = nsresolve.NewResolver()
	}
	r := &Registry{
		opts:     opts,
		log:      opts.Log,
		resolver: opts.Resolver,
		byID:     map[string]*Namespace{},
		byPidNS:  map[nsresolve.NSID]*Namespace{},
	}
	r.host = newNamespace(HostID, 0, nil, opts.Algo, opts.Template, opts.HostPolicy, opts.PolicyLimits)
	if opts.StateDir != "" {
		if err := r.openState(); err != nil {
			return nil, fmt.Errorf("new registry: %w", err)
		}
	}
	if r.host.List.Len() == 0 {
		ba, err := r.bootAggregate(r.host)
		if err != nil {
			return nil, fmt.Errorf("new registry: %w", err)
		}
		if err := r.Record(r.host, ba); err != nil {
			return nil, fmt.Errorf("new registry: record boot_aggregate: %w", err)
		}
	}
	if r.state != nil {
		r.state.markInitialized()
	}
	w, err := newWatcher(r.initExited, r.log)
	if err != nil {
		r.closeState()
		return nil, fmt.Errorf("new registry: %w", err)
	}
	r.watch = w
	return r, nil
}

// Resolver returns the registry's caller resolver.
func (r *Registry) Resolver() *nsresolve.Resolver { return r.resolver }

// Host returns the host namespace.
func (r *Registry) Host() *Namespace { return r.host }

// bootAggregate returns ns's first entry. A template whose "d" field needs
// a SHA-1 (ima with a sha256 namespace) gets the SHA-1 aggregate there, as
// ima_eventdigest_init computes it (zeros when it is unavailable).
func (r *Registry) bootAggregate(ns *Namespace) (*measurelog.Entry, error) {
	algos, err := HashAlgos(ns.Template(), ns.Algo())
	if err != nil {
		return nil, fmt.Errorf("boot_aggregate for %s: %w", ns.ID, err)
	}
	digests := make([][]byte, len(algos))
	for i, a := range algos {
		digests[i] = make([]byte, a.Size())
		if r.opts.BootAggregate == nil {
			continue
		}
		d, err := r.opts.BootAggregate(a)
		if err != nil {
			r.log.WithError(err).WithField("algo", a.String()).Warn("boot_aggregate unavailable, using zeros")
			continue
		}
		digests[i] = d
	}
	m := measurelog.Measurement{Name: measurelog.BootAggregateName}
	SetDigests(&m, algos, digests)
	e, err := measurelog.NewEntry(ns.Template(), DefaultPCR, m)
	if err != nil {
		return nil, fmt.Errorf("boot_aggregate for %s: %w", ns.ID, err)
	}
	return e, nil
}

// Attach registers the container whose init is pid under id: it pins the
// container's namespaces and starts its list with boot_aggregate and, when
// ociConfig is not nil, an ima-buf entry "oci-config" over its bytes.
func (r *Registry) Attach(id string, pid int, ociConfig []byte) (*Namespace, error) {
	if !validID.MatchString(id) || id == HostID {
		return nil, fmt.Errorf("attach %q: %w", id, ErrInvalidID)
	}
	if pid <= 0 {
		return nil, fmt.Errorf("attach %s: pid %d: %w", id, pid, ErrNotRunning)
	}
	start, err := r.startPolicy(id, ociConfig)
	if err != nil {
		return nil, err
	}
	pinned, err := nsresolve.Pin(pid)
	if err != nil {
		return nil, fmt.Errorf("attach %s: pin pid %d: %w", id, pid, err)
	}
	hostPidNS, err := r.hostPidNS()
	if err != nil {
		pinned.Close()
		return nil, fmt.Errorf("attach %s: %w", id, err)
	}
	if pinned.PidNS == hostPidNS {
		pinned.Close()
		return nil, fmt.Errorf("attach %s: pid %d: %w", id, pid, ErrHostPidNS)
	}
	ns := r.newContainer(id, pid, pinned)
	initial, err := r.initialEntries(ns, ociConfig)
	if err != nil {
		pinned.Close()
		return nil, fmt.Errorf("attach %s: %w", id, err)
	}

	r.mu.Lock()
	if _, dup := r.byID[id]; dup {
		r.mu.Unlock()
		pinned.Close()
		return nil, fmt.Errorf("attach %s: %w", id, ErrExists)
	}
	if other, dup := r.byPidNS[pinned.PidNS]; dup {
		r.mu.Unlock()
		pinned.Close()
		return nil, fmt.Errorf("attach %s: pid namespace of pid %d belongs to %s: %w", id, pid, other.ID, ErrExists)
	}
	r.byID[id] = ns
	r.byPidNS[pinned.PidNS] = ns
	observers := append([]Observer(nil), r.observers...)
	r.mu.Unlock()

	if r.state != nil {
		if err := r.newNamespaceState(ns, ociConfig); err != nil {
			r.remove(ns, false)
			return nil, fmt.Errorf("attach %s: %w", id, err)
		}
	}
	if err := r.RecordAll(itemsOf(ns, initial)); err != nil {
		r.remove(ns, true)
		return nil, fmt.Errorf("attach %s: %w", id, err)
	}
	if r.state != nil {
		if err := r.state.saveRecord(ns.StateRecord()); err != nil {
			r.remove(ns, true)
			return nil, fmt.Errorf("attach %s: %w", id, err)
		}
	}
	if err := r.applyStartPolicy(ns, start); err != nil {
		return nil, err
	}
	if err := r.watch.add(pinned.PidFD(), id); err != nil {
		r.remove(ns, true)
		return nil, fmt.Errorf("attach %s: watch init %d: %w", id, pid, err)
	}
	r.log.WithFields(logrus.Fields{"id": id, "pid": pid, "pidns": pinned.PidNS.Ino, "userns": pinned.UserNS.Ino}).Info("attached")
	for _, o := range observers {
		o.Attached(ns)
	}
	// An init that exited between Pin and the watch is detached here; the
	// epoll loop only reports changes it sees after add.
	if !pinned.Alive() {
		go r.initExited(id)
	}
	return ns, nil
}

// startPolicy asks Options.StartPolicy for id's starting policy (nil: the
// default policy).
func (r *Registry) startPolicy(id string, ociConfig []byte) (policy.Policy, error) {
	if r.opts.StartPolicy == nil {
		return nil, nil
	}
	start, err := r.opts.StartPolicy(id, ociConfig)
	if err != nil {
		return nil, fmt.Errorf("attach %s: starting policy: %w", id, err)
	}
	return start, nil
}

// applyStartPolicy loads start (if any) as ns's first policy; on a failure
// it removes ns, which Attach has registered but no observer has seen.
func (r *Registry) applyStartPolicy(ns *Namespace, start policy.Policy) error {
	if start == nil {
		return nil
	}
	if err := ns.LoadPolicy(start); err != nil {
		r.remove(ns, true)
		return fmt.Errorf("attach %s: starting policy: %w", ns.ID, err)
	}
	r.log.WithFields(logrus.Fields{"id": ns.ID, "rules": len(start)}).Info("starting policy from the OCI config")
	return nil
}

func (r *Registry) initialEntries(ns *Namespace, ociConfig []byte) ([]*measurelog.Entry, error) {
	ba, err := r.bootAggregate(ns)
	if err != nil {
		return nil, err
	}
	entries := []*measurelog.Entry{ba}
	if ociConfig != nil {
		e, err := measurelog.NewEntry("ima-buf", DefaultPCR, measurelog.Measurement{
			FileDigest: ns.Algo().Sum(ociConfig),
			FileAlgo:   ns.Algo(),
			Name:       OCIConfigName,
			Buf:        ociConfig,
			Namespace:  ns.Label(),
		})
		if err != nil {
			return nil, fmt.Errorf("measure oci config: %w", err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func itemsOf(ns *Namespace, entries []*measurelog.Entry) []Item {
	items := make([]Item, len(entries))
	for i, e := range entries {
		items[i] = Item{NS: ns, Entry: e}
	}
	return items
}

func (r *Registry) hostPidNS() (nsresolve.NSID, error) {
	id := r.resolver.HostPidNS()
	if id.IsZero() {
		return id, fmt.Errorf("host pid namespace unknown")
	}
	return id, nil
}

// remove unregisters ns and reports whether it was registered. archive
// moves its state directory to archive/ (a detach); without it the state
// stays for the next daemon (a shutdown).
func (r *Registry) remove(ns *Namespace, archive bool) bool {
	r.mu.Lock()
	cur, ok := r.byID[ns.ID]
	if !ok || cur != ns {
		r.mu.Unlock()
		return false
	}
	delete(r.byID, ns.ID)
	if r.byPidNS[ns.Pinned.PidNS] == ns {
		delete(r.byPidNS, ns.Pinned.PidNS)
	}
	r.mu.Unlock()
	r.watch.remove(ns.Pinned.PidFD())
	ns.markDetached()
	ns.Pinned.Close()
	if r.state != nil && ns.journal != nil {
		r.state.closeJournal(ns.journal)
		if archive && !r.state.isFrozen() {
			// (Frozen: the successor daemon owns the directory and
			// archives it itself when it finds the init gone.)
			r.state.moveAside(ns.ID, archiveDirName, "detached")
		}
	}
	return true
}

// Detach unregisters the container id. Its list stays readable through
// Namespace values still held (and in the host's list).
func (r *Registry) Detach(id string) error {
	r.mu.RLock()
	ns, ok := r.byID[id]
	observers := append([]Observer(nil), r.observers...)
	r.mu.RUnlock()
	if !ok {
		return fmt.Errorf("detach %s: %w", id, ErrNotFound)
	}
	if !r.remove(ns, true) {
		return fmt.Errorf("detach %s: %w", id, ErrNotFound)
	}
	r.log.WithFields(logrus.Fields{"id": id, "pid": ns.Init, "entries": ns.List.Len()}).Info("detached")
	for _, o := range observers {
		o.Detached(ns)
	}
	return nil
}

func (r *Registry) initExited(id string) {
	r.log.WithField("id", id).Info("container init exited")
	if err := r.Detach(id); err != nil && !errors.Is(err, ErrNotFound) {
		r.log.WithError(err).WithField("id", id).Warn("auto-detach")
	}
}

// Get returns the container registered as id.
func (r *Registry) Get(id string) (*Namespace, bool) {
	if id == HostID {
		return r.host, true
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	ns, ok := r.byID[id]
	return ns, ok
}

// Namespaces returns the registered containers sorted by ID (not the host).
func (r *Registry) Namespaces() []*Namespace {
	r.mu.RLock()
	out := make([]*Namespace, 0, len(r.byID))
	for _, ns := range r.byID {
		out = append(out, ns)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ForCaller returns the namespace that answers for c: the registered
// container owning c's pid namespace or its nearest registered ancestor, else
// the host.
func (r *Registry) ForCaller(c *nsresolve.Caller) (*Namespace, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok, err := r.resolver.Owner(c, func(id nsresolve.NSID) bool {
		_, reg := r.byPidNS[id]
		return reg
	})
	if err != nil {
		return nil, fmt.Errorf("namespace for pid %d: %w", c.PID, err)
	}
	if !ok {
		return r.host, nil
	}
	ns, reg := r.byPidNS[id]
	if !reg {
		// Owner saw it registered under this same read lock: unreachable.
		return nil, fmt.Errorf("namespace for pid %d: pid ns %d: %w", c.PID, id.Ino, ErrDetached)
	}
	return ns, nil
}

// Record appends e to ns's list and to the host's list (the host sees all).
// With a state directory, e is first journaled (ns's journal and the
// host's, fsynced, batched with concurrent Records) and appended to the
// lists only once durable: when Record returns nil the entry survives a
// crash, and no reader ever saw an entry a crash could take back. A
// duplicate (same template digest and PCR as an earlier entry of the list)
// is not added again, as in the kernel (replay applies the same rule).
func (r *Registry) Record(ns *Namespace, e *measurelog.Entry) error {
	return r.RecordAll([]Item{{NS: ns, Entry: e}})
}

// RecordAll records items in order, each as Record would. With a state
// directory they are journaled together: one write and fsync per journal
// for all of them instead of one per entry, for a source with a backlog
// (the kernel's list read by a restarted daemon). It returns once every
// item is durable and listed, or the error of the first item that failed
// (the others are recorded).
func (r *Registry) RecordAll(items []Item) error {
	if len(items) == 0 {
		return nil
	}
	for _, it := range items {
		// Two lists (its namespace's and the host's) and two journals
		// take every entry: compute its digests once.
		it.Entry.CacheDigests()
		if it.Host != nil {
			it.Host.CacheDigests()
		}
	}
	if r.state != nil {
		if i, err := r.state.commitAll(r.host, items); err != nil {
			return fmt.Errorf("record in %s: %w", items[i].NS.ID, err)
		}
		return nil
	}
	r.recordMu.Lock()
	defer r.recordMu.Unlock()
	for _, it := range items {
		it.NS.List.Append(it.Entry)
		if it.NS != r.host {
			r.host.List.Append(it.hostEntry())
		}
	}
	return nil
}

// AddObserver registers o for attach and detach notifications. It returns
// the function that removes o again (a component that stops leaves no
// observer behind); calling it more than once is harmless. o must be
// comparable (a pointer, typically).
func (r *Registry) AddObserver(o Observer) (remove func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observers = append(r.observers, o)
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			for i, x := range r.observers {
				if x == o {
					r.observers = append(r.observers[:i:i], r.observers[i+1:]...)
					return
				}
			}
		})
	}
}

// Close stops the registry for a daemon shutdown: it closes every journal
// and releases every pinned namespace, but keeps the containers' state (no
// observer is told of a detach), so that the next daemon on the same state
// directory restores them (Restore). Without a state directory that is the
// end of them.
func (r *Registry) Close() error {
	r.mu.Lock()
	nss := make([]*Namespace, 0, len(r.byID))
	for _, ns := range r.byID {
		nss = append(nss, ns)
	}
	r.mu.Unlock()
	for _, ns := range nss {
		r.remove(ns, false)
	}
	err := r.watch.close()
	r.closeState()
	return err
}
