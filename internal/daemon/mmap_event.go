package daemon

import (
	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/mmapsrc"
	"github.com/imafs/imafs/nsresolve"
	"github.com/imafs/imafs/policy"
)

// Names of the violation entries the mmap source records (documented in
// docs/file-semantics.md). A file it could open but not measure, or that
// changed after it was mapped (ToMToU), is named by its path instead.
const (
	// MmapUnmeasuredName: a file was mapped executable and could not be
	// opened to be measured (the task unmapped it or exited first).
	MmapUnmeasuredName = "<mmap-unmeasured>"
	// MmapLostName: the kernel could not report executable mappings of
	// the container (a full ring buffer); in the host list when the mount
	// namespace is unknown.
	MmapLostName = "<mmap-lost>"
	// MmapAppraiseUnenforcedName: a policy load made the container
	// appraise MMAP_CHECK, which cannot be enforced (the tracepoint
	// mechanism cannot deny, or no fanotify engine verifies files).
	MmapAppraiseUnenforcedName = "<mmap-appraise-unenforced>"
	// MmapUnwatchedName: the container's pid namespace could not be
	// watched; none of its executable mappings is measured.
	MmapUnwatchedName = "<mmap-unwatched>"
)

// handle records one event of the source: plan (whose container, is it in
// policy), then measure, or a violation for what could not be measured.
func (m *mmapSource) handle(ev *mmapsrc.Event) {
	if ev.File != nil {
		defer ev.File.Close()
	}
	m.events.Add(1)
	if ev.Kind == mmapsrc.Lost {
		m.lost(ev)
		return
	}
	log := m.log.WithFields(logrus.Fields{"pid": ev.Pid, "kind": ev.Kind.String(), "dev": ev.Dev, "ino": ev.Ino, "file": ev.Path})
	w, caller, err := m.find(ev)
	if err != nil {
		// A watched task's mapping that cannot be attributed (it exited
		// and its namespaces are no container's): the host list says so.
		m.errors.Add(1)
		m.violation(m.reg.Host(), m.reg.Host().Template(), imans.DefaultPCR, MmapUnmeasuredName, "unattributed", log.WithError(err))
		return
	}
	if w == nil {
		log.Debug("mmap source: mapping of no watched container")
		return
	}
	log = log.WithField("id", w.ns.ID)
	m.refresh(w)
	if ev.Denied {
		m.denied(w, ev, log)
	}
	p := w.ns.Policy()
	if !usesMmap(p) {
		return
	}
	if ev.Err != nil {
		m.errors.Add(1)
		m.violation(w.ns, w.ns.Template(), imans.DefaultPCR, MmapUnmeasuredName, "unmeasured", log.WithError(ev.Err))
		m.forget(ev, log) // its next mapping is measured
		return
	}
	if ev.Changed {
		// Written since it was mapped: what is hashed is not what runs.
		m.violation(w.ns, w.ns.Template(), imans.DefaultPCR, ev.Path, "ToMToU", log)
	}
	m.measure(w, ev, caller, p, log)
}

// find returns ev's container: the watch of its pid namespace, else of its
// mount namespace when one container has it, else the container of the
// task (a pid namespace below a container's). An error means the task
// could not be resolved.
func (m *mmapSource) find(ev *mmapsrc.Event) (*mmapWatch, *nsresolve.Caller, error) {
	var byMnt *mmapWatch
	n := 0
	m.mu.Lock()
	for _, w := range m.watches {
		if w.pidns == ev.PidNS {
			m.mu.Unlock()
			return w, nil, nil
		}
		if w.mntns == ev.MntNS {
			byMnt, n = w, n+1
		}
	}
	m.mu.Unlock()
	if n == 1 {
		return byMnt, nil, nil
	}
	caller, err := m.res.Caller(ev.Tid)
	if err != nil {
		return nil, nil, err
	}
	ns, err := m.reg.ForCaller(caller)
	if err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if w, ok := m.watches[ns.ID]; ok && w.ns == ns {
		return w, caller, nil
	}
	return nil, nil, nil
}

// measure matches the mapping against p for MMAP_CHECK_REQPROT and
// MMAP_CHECK, as ima_file_mmap does, and records what a rule measures (an
// entry both record alike is listed once). A mapping that is not measured
// while the decision depends on the task is forgotten, so that another
// task's mapping of the file is evaluated too.
func (m *mmapSource) measure(w *mmapWatch, ev *mmapsrc.Event, caller *nsresolve.Caller, p policy.Policy, log *logrus.Entry) {
	byCaller := dependsOnCaller(p)
	if byCaller && caller == nil {
		var err error
		if caller, err = m.res.Caller(ev.Tid); err != nil {
			// The policy asks who mapped it, and nobody can say.
			m.errors.Add(1)
			m.violation(w.ns, w.ns.Template(), imans.DefaultPCR, ev.Path, "collect_data", log.WithError(err))
			return
		}
	}
	pev, err := m.policyEvent(w, ev, caller)
	if err != nil {
		m.errors.Add(1)
		m.violation(w.ns, w.ns.Template(), imans.DefaultPCR, ev.Path, "collect_data", log.WithError(err))
		m.forget(ev, log)
		return
	}
	measured := false
	for _, fn := range mmapFuncs {
		pev.Func = fn
		d, err := m.record(w, ev, pev)
		if err != nil {
			m.errors.Add(1)
			template, pcr := w.ns.Target(d)
			m.violation(w.ns, template, pcr, ev.Path, "collect_data", log.WithError(err))
			continue
		}
		measured = measured || d.Actions&policy.Measure != 0
	}
	if measured {
		m.measured.Add(1)
	} else if byCaller {
		m.forget(ev, log)
	}
}

// record measures the mapped file for pev: the kernel's digest when the
// mechanism computed one, else a hash of the file.
func (m *mmapSource) record(w *mmapWatch, ev *mmapsrc.Event, pev policy.Event) (policy.Decision, error) {
	if ev.Digest == nil {
		return m.reg.MeasureFile(w.ns, pev, ev.File, ev.Path)
	}
	d := w.ns.Policy().Match(pev)
	if d.Actions&policy.Measure == 0 {
		return d, nil
	}
	algo, err := measurelog.ParseAlgo(ev.DigestAlgo)
	if err != nil {
		return d, err
	}
	// The kernel hashed in its own algorithm (ima_hash_algo) and only
	// that: a namespace in another algorithm, or a template that needs a
	// SHA-1 or the file's xattrs too, is measured from the file when the
	// source opened it (the entry then says what the file holds now).
	template, _ := w.ns.Target(d)
	needs, err := measurelog.TemplateNeeds(template, algo)
	if err != nil {
		return d, err
	}
	if ev.File != nil && (algo != w.ns.Algo() || needs.SHA1 || needs.Xattrs) {
		return m.reg.MeasureFile(w.ns, pev, ev.File, ev.Path)
	}
	var attrs imans.FileAttrs
	if ev.File != nil {
		if attrs, err = imans.FileAttrsOf(ev.File); err != nil {
			return d, err
		}
	}
	return m.reg.MeasureDigest(w.ns, pev, algo, ev.Digest, attrs, ev.Path)
}

// policyEvent is the policy's view of the mapping: MAY_EXEC, the file's
// owner, group and file system, the task's ids, all as the container sees
// them.
func (m *mmapSource) policyEvent(w *mmapWatch, ev *mmapsrc.Event, caller *nsresolve.Caller) (policy.Event, error) {
	pev := policy.Event{Mask: policy.MayExec}
	if ev.File != nil {
		var err error
		if pev, err = imans.EventFor(ev.File, policy.MMAPCheck, policy.MayExec, 0, 0); err != nil {
			return pev, err
		}
		pev.FOwner, pev.FGroup = w.uids.ToNS(pev.FOwner), w.gids.ToNS(pev.FGroup)
	}
	if caller != nil {
		pev.UID, pev.EUID = w.uids.ToNS(caller.UID), w.uids.ToNS(caller.EUID)
		pev.GID, pev.EGID = w.gids.ToNS(caller.GID), w.gids.ToNS(caller.EGID)
	}
	return pev, nil
}

// lost records that mappings were not reported: in every watched container
// of the mount namespace whose policy measures mappings, else (an unknown
// mount namespace) in the host list.
func (m *mmapSource) lost(ev *mmapsrc.Event) {
	log := m.log.WithFields(logrus.Fields{"mntns": ev.MntNS, "count": ev.Count})
	m.errors.Add(ev.Count)
	var in []*imans.Namespace
	known := false
	m.mu.Lock()
	for _, w := range m.watches {
		if ev.MntNS != 0 && w.mntns == ev.MntNS {
			known = true
			if usesMmap(w.ns.Policy()) {
				in = append(in, w.ns)
			}
		}
	}
	m.mu.Unlock()
	if !known {
		in = []*imans.Namespace{m.reg.Host()}
	}
	for _, ns := range in {
		m.violation(ns, ns.Template(), imans.DefaultPCR, MmapLostName, "lost", log.WithField("id", ns.ID))
	}
}

// forget makes ev's file report again at its next mapping.
func (m *mmapSource) forget(ev *mmapsrc.Event, log *logrus.Entry) {
	if err := m.src.Forget(ev.Dev, ev.Ino, ev.MntNS); err != nil {
		log.WithError(err).Warn("mmap source: forget")
	}
}

// violation records a violation entry (all-zero digest, the PCR extended
// with 0xff) in ns's list.
func (m *mmapSource) violation(ns *imans.Namespace, template string, pcr uint32, name, kind string, log *logrus.Entry) {
	entry, err := measurelog.NewViolation(template, pcr, name, ns.Algo())
	if err == nil {
		err = m.reg.Record(ns, entry)
	}
	if err != nil {
		log.WithError(err).WithField("violation", kind).Error("mmap source: record violation")
		return
	}
	m.violations.Add(1)
	log.WithField("violation", kind).Warn("mmap source: measurement violation")
}
