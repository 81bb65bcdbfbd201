package imans

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/nsresolve"
	"github.com/imafs/imafs/policy"
)

// HostID is the ID of the host namespace.
const HostID = "host"

// DefaultPCR is the PCR measurements go to unless a rule says pcr=.
const DefaultPCR = 10

// ErrEmptyPolicy is returned by LoadPolicy for a load without rules: like the
// kernel ("policy update failed"), such a session changes nothing.
var ErrEmptyPolicy = errors.New("policy load without rules")

// Namespace is one registered container (or the host).
type Namespace struct {
	ID       string            // container id (HostID for the host)
	Init     int               // host pid of the container's init (0 for the host)
	Pinned   *nsresolve.Pinned // nil for the host
	List     *measurelog.List
	Attached time.Time

	algo     measurelog.Algo
	template string

	mu           sync.RWMutex
	policy       policy.Policy // never changed in place: a load makes a new slice
	policyText   string        // policy.String(), rendered once per load
	policyBytes  int64         // policy.Bytes(), what counts against limits
	policyLoaded bool          // a load replaced the default policy; later loads append
	limits       policy.Limits

	policyWriter atomic.Bool   // one policy writer at a time (EBUSY for a second)
	detached     chan struct{} // closed by Detach
	detachOnce   sync.Once

	// With a state directory: the list's journal, the attach record and
	// the hook that makes a policy load durable before it applies.
	journal    *jfile
	damaged    atomic.Pointer[string] // why the list is known incomplete (journal damage)
	record     *ContainerRecord
	savePolicy func(text string) error
	storageErr func() error // the state directory's failure, nil when it takes writes
}

func newNamespace(id string, init int, pinned *nsresolve.Pinned, algo measurelog.Algo, template string, defaultPolicy policy.Policy, limits policy.Limits) *Namespace {
	n := &Namespace{
		ID:       id,
		Init:     init,
		Pinned:   pinned,
		List:     measurelog.NewList(measurelog.SHA1, measurelog.SHA256),
		Attached: time.Now(),
		algo:     algo,
		template: ownTemplate(template),
		limits:   limits.OrDefault(),
		detached: make(chan struct{}),
	}
	n.setPolicy(append(policy.Policy(nil), defaultPolicy...))
	return n
}

// newContainer returns a new container namespace with the registry's
// options; with a state directory its list is journal-backed (read from
// its journal once that is created or replayed).
func (r *Registry) newContainer(id string, pid int, pinned *nsresolve.Pinned) *Namespace {
	ns := newNamespace(id, pid, pinned, r.opts.Algo, r.opts.Template, r.opts.DefaultContainerPolicy, r.opts.PolicyLimits)
	if r.state != nil {
		ns.List = newList()
	}
	return ns
}

// setPolicy replaces the policy and its cached renderings; n.mu is held (or
// n is not shared yet).
func (n *Namespace) setPolicy(p policy.Policy) {
	n.policy = p[:len(p):len(p)]
	n.policyText = p.String()
	n.policyBytes = p.Bytes()
}

// IsHost reports whether n is the host namespace.
func (n *Namespace) IsHost() bool { return n.Pinned == nil }

// Label is the value of the ima-ns template's ns field for entries made in n:
// the container ID, or "" for the host.
func (n *Namespace) Label() string {
	if n.IsHost() {
		return ""
	}
	return n.ID
}

// Policy returns n's current policy: a snapshot that no load changes (a
// load makes a new slice), shared with every other caller, so read-only
// (its capacity ends at its length: an append copies).
func (n *Namespace) Policy() policy.Policy {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.policy
}

// PolicyText returns the policy file's content (Policy().String()),
// rendered once per load rather than at every read or stat.
func (n *Namespace) PolicyText() string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.policyText
}

// PolicyLimits returns n's limits.
func (n *Namespace) PolicyLimits() policy.Limits { return n.limits }

// PolicyRoom returns what a load may still add to n's policy: the whole of
// n's limits while the default policy is active (the first load replaces
// it), else what the current rules leave.
func (n *Namespace) PolicyRoom() policy.Limits {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.policyLoaded {
		return n.limits
	}
	return policy.Limits{MaxRules: n.limits.MaxRules - len(n.policy), MaxBytes: n.limits.MaxBytes - n.policyBytes}
}

// LoadPolicy applies a successful policy load: the first one replaces the
// default policy, later ones append, as the kernel does with its boot policy.
// A load without rules changes nothing and returns ErrEmptyPolicy; one that
// would exceed n's limits changes nothing and returns an error wrapping
// policy.ErrNoSpace.
func (n *Namespace) LoadPolicy(rules policy.Policy) error {
	if len(rules) == 0 {
		return ErrEmptyPolicy
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	next := append(policy.Policy(nil), rules...)
	if n.policyLoaded {
		next = append(append(make(policy.Policy, 0, len(n.policy)+len(rules)), n.policy...), rules...)
	}
	if !n.limits.Fits(len(next), next.Bytes()) {
		return fmt.Errorf("policy of %s: %d rules, %d bytes: %w (limits %d rules, %d bytes)",
			n.ID, len(next), next.Bytes(), policy.ErrNoSpace, n.limits.MaxRules, n.limits.MaxBytes)
	}
	text := next.String()
	if n.savePolicy != nil {
		// Durable before it applies: a restarted daemon enforces what
		// the namespace's root last loaded.
		if err := n.savePolicy(text); err != nil {
			return err
		}
	}
	n.policy = next[:len(next):len(next)]
	n.policyText = text
	n.policyBytes = next.Bytes()
	n.policyLoaded = true
	return nil
}

// StateRecord returns a copy of the attach record kept in the state directory
// (nil without one, and for the host).
func (n *Namespace) StateRecord() *ContainerRecord {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.record == nil {
		return nil
	}
	rec := *n.record
	return &rec
}

// DefaultPolicyActive reports that no policy load has replaced the
// namespace's initial (default) policy yet.
func (n *Namespace) DefaultPolicyActive() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return !n.policyLoaded
}

// Algo is the hash algorithm of file digests in n (default sha256).
func (n *Namespace) Algo() measurelog.Algo { return n.algo }

// Template is the default template of measurements in n (default ima-ng).
func (n *Namespace) Template() string { return n.template }

// Target is where a measurement that d decided goes in n: the rule's
// template, else n's, and the rule's PCR, else DefaultPCR. Every source
// asks here.
func (n *Namespace) Target(d policy.Decision) (template string, pcr uint32) {
	template, pcr = n.template, DefaultPCR
	if d.Template != "" {
		template = ownTemplate(d.Template)
	}
	if d.PCR >= 0 {
		pcr = uint32(d.PCR)
	}
	return template, pcr
}

// ownTemplate is the template of the daemon's own records for a template
// name: the kernel series' ima-nsreg ("label:id" of a kernel registration
// in its ns field) becomes imafs's ima-ns (the same fields, the container
// ID in ns), since the daemon's measurements have no kernel registration.
func ownTemplate(name string) string {
	if name == measurelog.TemplateIMANSReg {
		return measurelog.TemplateIMANS
	}
	return name
}

// AcquirePolicyWriter claims n's policy file for one writer; false means a
// writer already holds it (the kernel answers EBUSY).
func (n *Namespace) AcquirePolicyWriter() bool { return n.policyWriter.CompareAndSwap(false, true) }

// ReleasePolicyWriter gives the policy file back.
func (n *Namespace) ReleasePolicyWriter() { n.policyWriter.Store(false) }

// Detached returns a channel closed once n has been detached.
func (n *Namespace) Detached() <-chan struct{} { return n.detached }

// IsDetached reports whether n has been detached.
func (n *Namespace) IsDetached() bool {
	select {
	case <-n.detached:
		return true
	default:
		return false
	}
}

func (n *Namespace) markDetached() { n.detachOnce.Do(func() { close(n.detached) }) }
