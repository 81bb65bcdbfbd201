package fanotify

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/appraise"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/internal/xattr"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/nsresolve"
	"github.com/imafs/imafs/policy"
)

// errTimeout: hashing did not finish before the event's deadline.
var errTimeout = errors.New("hash timed out")

// verdict is the answer to an event decided before all the work is done.
type verdict struct {
	allow  bool
	reason string // see Answer.Reason
}

var allowed = &verdict{allow: true}

func failed(allow bool, reason string) *verdict { return &verdict{allow, reason} }

// plan is what the policy asks of one event (the kernel's ima_get_action
// and the integrity cache's flags): who opens which file for what, the
// decision, and what is left to do for this version of the file.
type plan struct {
	ev     *event
	caller *nsresolve.Caller
	st     unix.Stat_t
	key    inoKey
	fn     policy.Func
	mask   policy.Mask
	twin   bool // the FAN_OPEN_PERM twin of an exec (see classify)
	pev    policy.Event
	d      policy.Decision
	log    *logrus.Entry

	pol            policy.Policy // the watch's policy, read with gen
	gen            uint64        // the watch's generation when the policy was read
	independent    bool          // the decision holds for every caller: ignore marks allowed
	uidMap, gidMap idMap
	mmapAppr       bool // the policy appraises MMAP_CHECK (watch.mmapAppr)
	mmapIndep      bool // ... with decisions that hold for every caller

	template string
	pcr      uint32
	req      appraise.Requirement
	file     fileRef
	writers  int // open for write (open_writers)
	measure  bool
	appraise bool
	audit    bool
	denied   bool // a cached appraisal failure stands
	mmap     bool // appraise for MMAP_CHECK too (Options.Mmap)
	mmapReq  appraise.Requirement
	cause    string // ... its cause
	name     string // see fileName
}

// collected is the file's content as measured: its digest (in the
// algorithm security.ima names when appraising) and security.ima.
type collected struct {
	algo    measurelog.Algo
	digest  []byte
	algos   []measurelog.Algo // what the file was hashed in: algo, then what the template needs too
	digests [][]byte          // ... each one's digest (digests[0] == digest)
	changed bool              // modified while hashed (ToMToU)
	xv      *appraise.Value
	xerr    error
	// allAlgos/allDigests: algos and digests, then what the MMAP_CHECK
	// appraisal needs (security.ima's algorithm, the kernel's).
	allAlgos   []measurelog.Algo
	allDigests [][]byte
}

// handle decides one permission event in the shape of the kernel's
// process_measurement: plan (resolve, match, decide what is left), collect
// (security.ima, hash), then store, appraise and audit. It returns whether
// to allow the access and, when not, why (see Answer.Reason). Everything
// recorded is recorded before the answer.
func (w *watch) handle(ev *event) (allow bool, reason string) {
	p, v := w.plan(ev)
	if v != nil {
		return v.allow, v.reason
	}
	c, v := w.collect(p)
	if v != nil {
		return v.allow, v.reason
	}
	return w.finish(p, c)
}

// plan resolves the event and decides what is left to do; a verdict when
// nothing is.
func (w *watch) plan(ev *event) (*plan, *verdict) {
	p, v := w.resolve(ev)
	if v != nil {
		return nil, v
	}
	w.classify(p)
	w.match(p)
	w.matchMmap(p)
	w.trackWriters(p)
	if p.d.Actions&(policy.Measure|policy.Appraise|policy.Audit) == 0 && !p.mmap {
		if p.independent {
			w.ignore(ev, p.gen)
		}
		return nil, allowed
	}
	w.lookup(p)
	return p, w.shortcut(p)
}

// resolve finds the caller and the file: only a regular file opened by a
// task of this watch's container goes on.
func (w *watch) resolve(ev *event) (*plan, *verdict) {
	e := w.e
	caller, err := e.res.Caller(ev.tid)
	if err != nil {
		// The opener is gone (killed while waiting): the answer no longer matters.
		w.log.WithError(err).WithField("tid", ev.tid).Debug("fanotify: resolve caller")
		return nil, failed(w.failureMode(ReasonError))
	}
	ns, err := e.reg.ForCaller(caller)
	if err != nil {
		e.stats.errors.Add(1)
		w.log.WithError(err).WithField("tid", ev.tid).Warn("fanotify: namespace of caller")
		return nil, failed(w.failureMode(ReasonError))
	}
	if ns != w.ns {
		// The host (IMA on stock kernels is not emulated for it) or another
		// registered container, which its own group answers for.
		return nil, allowed
	}
	w.refreshPolicy()
	p := &plan{ev: ev, caller: caller}
	if err := unix.Fstat(ev.fd, &p.st); err != nil {
		e.stats.errors.Add(1)
		w.log.WithError(err).Warn("fanotify: stat event file")
		return nil, failed(w.failureMode(ReasonError))
	}
	if p.st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, allowed // IMA measures regular files only
	}
	p.key = inoKey{p.st.Dev, p.st.Ino}
	return p, nil
}

// classify names the hook and the access: an exec is BPRM_CHECK, an open
// FILE_CHECK with the open's access mask.
func (w *watch) classify(p *plan) {
	p.fn, p.mask = policy.BPRMCheck, policy.MayExec
	if p.ev.mask&maskExec != 0 {
		return
	}
	p.fn, p.mask = policy.FileCheck, policy.MayRead
	if flags, ok := openFlags(w.e.opts.Proc, p.ev.tid); ok {
		p.mask = maskOf(flags)
	} else {
		// The FAN_OPEN_PERM twin of an exec's FAN_OPEN_EXEC_PERM: not a
		// FILE_CHECK (execve never calls ima_file_check); only used to add
		// an ignore mark when a read would have nothing left to do.
		p.twin = inExec(w.e.opts.Proc, p.ev.tid)
	}
}

// match matches the event against the container's policy, with the ids
// seen from inside the container.
func (w *watch) match(p *plan) {
	w.mu.Lock()
	p.pol = w.policy
	p.gen, p.uidMap, p.gidMap = w.gen, w.uidMap, w.gidMap
	p.independent = w.independent[p.fn]
	p.mmapAppr = w.mmapAppr
	p.mmapIndep = w.independent[policy.MMAPCheck] && w.independent[policy.MMAPCheckReqprot]
	w.mu.Unlock()
	c, st := p.caller, &p.st
	p.pev = policy.Event{
		Func: p.fn, Mask: p.mask,
		UID: p.uidMap.toNS(c.UID), EUID: p.uidMap.toNS(c.EUID),
		GID: p.gidMap.toNS(c.GID), EGID: p.gidMap.toNS(c.EGID),
		FOwner: p.uidMap.toNS(st.Uid), FGroup: p.gidMap.toNS(st.Gid),
	}
	var sfs unix.Statfs_t
	if unix.Fstatfs(p.ev.fd, &sfs) == nil {
		p.pev.FSMagic = uint64(sfs.Type)
	}
	p.d = p.pol.Match(p.pev)
	p.template, p.pcr = w.ns.Target(p.d)
	p.req = appraise.Requirement{Signature: p.d.AppraiseType != "" && p.d.AppraiseType != "modsig", Algos: p.d.AppraiseAlgos}
	p.log = w.log.WithFields(logrus.Fields{"tid": p.ev.tid, "pid": c.PID, "func": p.fn.String()})
}

// trackWriters counts write opens seen through FAN_OPEN_PERM, for
// open_writers violations (a FAN_CLOSE_WRITE counts them down), and records
// ToMToU as ima_rdwr_violation_check: a write open of a file this container
// measured while a task holds it open for read.
func (w *watch) trackWriters(p *plan) {
	if p.fn != policy.FileCheck || p.mask&(policy.MayWrite|policy.MayAppend) == 0 {
		return
	}
	measured := w.files.openWrite(p.key, &p.st)
	if measured && openForRead(w.e.opts.Proc, p.st.Dev, p.st.Ino) {
		name := w.fileName(p)
		w.violation(w.ns.Template(), imans.DefaultPCR, w.fileViolation(p, w.ns.Template(), w.ns.Algo()), "ToMToU", p.log.WithField("file", name))
	}
}

// lookup decides what is left to do for this version of the file in this
// container.
func (w *watch) lookup(p *plan) {
	acts := p.d.Actions
	p.file, p.writers = w.files.with(p.key, &p.st, p.gen, func(fs *fileState) {
		p.measure = acts&policy.Measure != 0 && !fs.measured[p.pcr]
		p.appraise = acts&policy.Appraise != 0 && (!fs.appraised || (p.req.Signature && !fs.appraisedSig && fs.appraiseErr == nil))
		p.audit = acts&policy.Audit != 0 && !fs.audited
		p.denied = acts&policy.Appraise != 0 && !p.appraise && fs.appraiseErr != nil
		p.cause = string(appraise.CauseOf(fs.appraiseErr))
		p.mmap = p.mmap && !fs.mmapChecked
	})
}

// shortcut answers what needs no hashing: an exec's open twin, and a file
// with nothing left to do (the cached appraisal result stands). A read open
// that must be measured while the file is open for write is an open_writers
// violation first (ima_rdwr_violation_check).
func (w *watch) shortcut(p *plan) *verdict {
	nothingLeft := !p.measure && !p.appraise && !p.audit && !p.mmap
	if p.twin {
		if nothingLeft && !p.denied && p.independent {
			w.ignore(p.ev, p.gen)
		}
		return allowed
	}
	if p.fn == policy.FileCheck && p.d.Actions&policy.Measure != 0 && p.mask&(policy.MayWrite|policy.MayAppend) == 0 && p.writers > 0 {
		w.violation(p.template, p.pcr, w.fileViolation(p, p.template, w.ns.Algo()), "open_writers", p.log.WithField("file", w.fileName(p)))
	}
	if !nothingLeft {
		return nil
	}
	w.e.stats.cached.Add(1)
	if p.denied {
		return failed(false, p.cause)
	}
	if p.independent {
		w.ignore(p.ev, p.gen)
	}
	return allowed
}

// fileName is the file's name as the opener sees it (once per event).
func (w *watch) fileName(p *plan) string {
	if p.name == "" {
		n, err := fileName(w.e.opts.Proc, p.ev.fd, p.ev.tid, p.caller.PID, w.ns.Init)
		if err != nil {
			n = fmt.Sprintf("<fd %d>", p.ev.fd)
		}
		p.name = n
	}
	return p.name
}

// collect reads security.ima and hashes the file (ima_collect_measurement):
// in the algorithm security.ima names when appraising, as the kernel does,
// and that digest is also the one measured. A file that cannot be hashed is
// a collect_data violation; one modified while hashed a ToMToU one.
func (w *watch) collect(p *plan) (*collected, *verdict) {
	p.log = p.log.WithField("file", w.fileName(p))
	c := &collected{algo: w.ns.Algo()}
	if raw, err := xattr.Get(p.ev.fd, appraise.XattrName); err == nil {
		c.xv, c.xerr = appraise.Parse(raw)
	}
	if p.d.Actions&policy.Appraise != 0 && c.xv != nil {
		if a, err := c.xv.HashAlgo(); err == nil {
			c.algo = a
		}
	}
	c.algos = []measurelog.Algo{c.algo}
	if p.measure {
		// The template may need a second digest (ima's "d" holds a SHA-1):
		// the same pass over the file computes it.
		if a, err := imans.HashAlgos(p.template, c.algo); err == nil {
			c.algos = a
		}
	}
	c.allAlgos = c.algos
	if p.mmap {
		c.allAlgos = w.mmapAlgos(c, c.algos)
	}
	var err error
	c.allDigests, c.changed, err = hashFile(p.ev.fd, c.allAlgos, &p.st, p.ev.start.Add(w.e.opts.Timeout))
	if err == nil {
		c.digests = c.allDigests[:len(c.algos)]
	}
	if err != nil {
		w.e.stats.errors.Add(1)
		p.log.WithError(err).Warn("fanotify: cannot hash file")
		if p.d.Actions&policy.Measure != 0 {
			// The list must show that something was not measured.
			w.violation(p.template, p.pcr, w.fileViolation(p, p.template, c.algo), "collect_data", p.log)
		}
		if p.d.Actions&policy.Appraise != 0 {
			return nil, failed(false, ReasonCollectData)
		}
		return nil, failed(w.failureMode(ReasonCollectData))
	}
	c.digest = c.digests[0]
	if c.changed {
		w.violation(p.template, p.pcr, w.fileViolation(p, p.template, c.algo), "ToMToU", p.log)
	}
	return c, nil
}

// finish stores, appraises and audits what the plan left to do, then adds
// an ignore mark when the decision holds for every later access.
func (w *watch) finish(p *plan, c *collected) (allow bool, reason string) {
	allow = true
	if p.measure && !w.store(p, c) {
		if w.failClosed() {
			allow, reason = false, ReasonError
		} else {
			// Allowed unmeasured: the list must show it (imans keeps a
			// violation it cannot write yet and writes it first once the
			// state directory takes writes).
			w.violation(p.template, p.pcr, w.fileViolation(p, p.template, c.algo), "record", p.log)
		}
	}
	if p.appraise {
		if cause := w.appraise(p, c); cause != "" {
			allow, reason = false, cause
		}
	}
	if p.audit {
		w.audit(p, c)
	}
	settled := !p.mmap || w.appraiseMmap(p, c)
	if allow && settled && !c.changed && p.independent {
		w.ignore(p.ev, p.gen)
	}
	return allow, reason
}

// store records the measurement (ima_store_measurement); false if it could
// not be recorded.
func (w *watch) store(p *plan, c *collected) bool {
	m := measurelog.Measurement{
		Name:      w.fileName(p),
		Namespace: w.ns.Label(),
		UID:       p.uidMap.toNS(p.st.Uid),
		GID:       p.gidMap.toNS(p.st.Gid),
		Mode:      uint16(p.st.Mode),
	}
	imans.SetDigests(&m, c.algos, c.digests)
	if c.xv != nil && c.xv.IsSignature() {
		m.Sig = c.xv.Raw
	}
	err := imans.ReadTemplateXattrs(p.ev.fd, p.template, &m)
	var entry *measurelog.Entry
	if err == nil {
		entry, err = measurelog.NewEntry(p.template, p.pcr, m)
	}
	if err == nil {
		err = w.e.reg.Record(w.ns, entry)
	}
	if err != nil {
		w.e.stats.errors.Add(1)
		p.log.WithError(err).Error("fanotify: record measurement")
		return false
	}
	w.e.stats.measured.Add(1)
	p.file.update(func(fs *fileState) { fs.measured[p.pcr] = true })
	return true
}

// appraise verifies the file against security.ima and the container's keys
// (ima_appraise_measurement); it returns the cause of a failure, "" if the
// file passes.
func (w *watch) appraise(p *plan, c *collected) string {
	var aerr error
	if c.xerr != nil {
		aerr = &appraise.Error{Cause: appraise.CauseInvalidXattr, Err: c.xerr}
	} else if keys, kerr := w.keyring(); kerr != nil {
		aerr = &appraise.Error{Cause: appraise.CauseUnknownError, Err: kerr}
	} else {
		aerr = appraise.Verify(c.xv, c.digest, keys, p.req)
	}
	p.file.update(func(fs *fileState) {
		fs.appraised, fs.appraiseErr = true, aerr
		fs.appraisedSig = aerr == nil && c.xv != nil && c.xv.IsSignature()
	})
	if aerr == nil {
		return ""
	}
	cause := string(appraise.CauseOf(aerr))
	p.log.WithFields(logrus.Fields{"cause": cause, "hash": fmt.Sprintf("%s:%x", c.algo, c.digest)}).
		WithError(aerr).Warn("fanotify: appraisal failed, access denied")
	return cause
}

// audit logs the file's hash (ima_audit_measurement).
func (w *watch) audit(p *plan, c *collected) {
	p.log.WithFields(logrus.Fields{"hash": fmt.Sprintf("%s:%x", c.algo, c.digest), "uid": p.pev.UID, "audit": "ima"}).Info("fanotify: audit")
	p.file.update(func(fs *fileState) { fs.audited = true })
}

// ignore adds an ignore mark for the event's kind on its inode, unless the
// policy or keys changed since the decision was made.
func (w *watch) ignore(ev *event, gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gen != gen || w.closed {
		return
	}
	if w.ignoreMarks >= maxCache {
		// Bound the marks (and, on kernels without evictable marks, the
		// inodes they pin): start over; the cache answers meanwhile.
		if err := w.g.flushInodeMarks(); err != nil {
			w.log.WithError(err).Warn("fanotify: flush ignore marks")
			return
		}
		w.ignoreMarks = 0
	}
	if err := w.g.ignore(ev.fd, ev.mask&(maskExec|maskOpen)); err != nil {
		w.log.WithError(err).Debug("fanotify: ignore mark")
		return
	}
	w.ignoreMarks++
	w.e.stats.ignored.Add(1)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// hashFile hashes the file behind fd in each of algos, in one pass.
// changed reports that it was modified
// while being hashed (its times or size differ from before).
func hashFile(fd int, algos []measurelog.Algo, before *unix.Stat_t, deadline time.Time) (digests [][]byte, changed bool, err error) {
	h := imans.NewMultiHash(algos)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var off int64
	for {
		n, err := unix.Pread(fd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("hash: read at %d: %w", off, err)
		}
		if n == 0 {
			break
		}
		h.Write(buf[:n])
		off += int64(n)
		if time.Now().After(deadline) {
			return nil, false, fmt.Errorf("hash at %d bytes: %w", off, errTimeout)
		}
	}
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil {
		return nil, false, fmt.Errorf("hash: stat: %w", err)
	}
	changed = after.Mtim != before.Mtim || after.Ctim != before.Ctim || after.Size != before.Size
	return h.Sums(), changed, nil
}
