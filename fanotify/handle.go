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
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// maxCache bounds the per-container file cache.
const maxCache = 1 << 17

// errTimeout: hashing did not finish before the event's deadline.
var errTimeout = errors.New("hash timed out")

// handle decides one permission event; it returns whether to allow it and,
// when not, why (see Answer.Reason). Everything recorded is recorded before
// the answer.
func (w *watch) handle(ev *event) (allow bool, reason string) {
	e := w.e
	caller, err := e.res.Caller(ev.tid)
	if err != nil {
		// The opener is gone (killed while waiting): the answer no longer matters.
		w.log.WithError(err).WithField("tid", ev.tid).Debug("fanotify: resolve caller")
		return w.failureMode(ReasonError)
	}
	ns, err := e.reg.ForCaller(caller)
	if err != nil {
		e.stats.errors.Add(1)
		w.log.WithError(err).WithField("tid", ev.tid).Warn("fanotify: namespace of caller")
		return w.failureMode(ReasonError)
	}
	if ns != w.ns {
		// The host (IMA on stock kernels is not emulated for it) or another
		// registered container, which its own group answers for.
		return true, ""
	}
	w.refreshPolicy()
	var st unix.Stat_t
	if err := unix.Fstat(ev.fd, &st); err != nil {
		e.stats.errors.Add(1)
		w.log.WithError(err).Warn("fanotify: stat event file")
		return w.failureMode(ReasonError)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return true, "" // IMA measures regular files only
	}
	k := inoKey{st.Dev, st.Ino}

	fn, mask := policy.BPRMCheck, policy.MayExec
	twin := false
	if ev.mask&maskExec == 0 {
		fn, mask = policy.FileCheck, policy.MayRead
		if flags, ok := openFlags(e.opts.Proc, ev.tid); ok {
			mask = maskOf(flags)
		} else {
			// The FAN_OPEN_PERM twin of an exec's FAN_OPEN_EXEC_PERM:
			// not a FILE_CHECK (execve never calls ima_file_check); only
			// used to add an ignore mark when a read would have nothing
			// left to do.
			twin = inExec(e.opts.Proc, ev.tid)
		}
	}
	w.mu.Lock()
	pol, gen, uidMap, gidMap := w.policy, w.gen, w.uidMap, w.gidMap
	independent := w.independent[fn]
	w.mu.Unlock()

	pev := policy.Event{
		Func: fn, Mask: mask,
		UID: uidMap.toNS(caller.UID), EUID: uidMap.toNS(caller.EUID),
		GID: gidMap.toNS(caller.GID), EGID: gidMap.toNS(caller.EGID),
		FOwner: uidMap.toNS(st.Uid), FGroup: gidMap.toNS(st.Gid),
	}
	var sfs unix.Statfs_t
	if unix.Fstatfs(ev.fd, &sfs) == nil {
		pev.FSMagic = uint64(sfs.Type)
	}
	d := pol.Match(pev)
	log := w.log.WithFields(logrus.Fields{"tid": ev.tid, "pid": caller.PID, "func": fn.String()})

	// Writers seen through FAN_OPEN_PERM, for open_writers violations; a
	// FAN_CLOSE_WRITE counts them down.
	if fn == policy.FileCheck && mask&(policy.MayWrite|policy.MayAppend) != 0 {
		w.mu.Lock()
		if len(w.writers) >= maxCache {
			w.writers = map[inoKey]int{} // closes were missed (overflow)
		}
		w.writers[k]++
		fs := w.cache[k]
		measured := fs != nil && fs.same(&st) && len(fs.measured) > 0
		w.mu.Unlock()
		// ToMToU, as ima_rdwr_violation_check: a write open of a file this
		// container measured while a task holds it open for read.
		if measured && openForRead(e.opts.Proc, st.Dev, st.Ino) {
			name, err := fileName(e.opts.Proc, ev.fd, ev.tid, caller.PID, w.ns.Init)
			if err != nil {
				name = fmt.Sprintf("<fd %d>", ev.fd)
			}
			w.violation(w.ns.Template(), imans.DefaultPCR, name, w.ns.Algo(), "ToMToU", log.WithField("file", name))
		}
	}
	if d.Actions&(policy.Measure|policy.Appraise|policy.Audit) == 0 {
		if independent {
			w.ignore(ev, gen)
		}
		return true, ""
	}
	pcr := uint32(imans.DefaultPCR)
	if d.PCR >= 0 {
		pcr = uint32(d.PCR)
	}
	req := appraise.Requirement{Signature: d.AppraiseType != "" && d.AppraiseType != "modsig", Algos: d.AppraiseAlgos}

	// What is left to do for this version of the file in this container?
	w.mu.Lock()
	if len(w.cache) >= maxCache {
		// Forget, as the kernel forgets an evicted inode's state: files
		// without an ignore mark are hashed again, and a re-measurement
		// with the same digest is dropped as a duplicate by the list.
		w.cache = map[inoKey]*fileState{}
	}
	fs := w.cache[k]
	if fs == nil || !fs.same(&st) {
		fs = &fileState{ctime: st.Ctim, mtime: st.Mtim, size: st.Size, measured: map[uint32]bool{}}
		w.cache[k] = fs
	}
	needMeasure := d.Actions&policy.Measure != 0 && !fs.measured[pcr]
	needAppraise := d.Actions&policy.Appraise != 0 && (!fs.appraised || (req.Signature && !fs.appraisedSig && fs.appraiseErr == nil))
	needAudit := d.Actions&policy.Audit != 0 && !fs.audited
	cachedDeny := d.Actions&policy.Appraise != 0 && !needAppraise && fs.appraiseErr != nil
	cachedCause := string(appraise.CauseOf(fs.appraiseErr))
	writers := w.writers[k]
	w.mu.Unlock()
	if twin {
		if !needMeasure && !needAppraise && !needAudit && !cachedDeny && independent {
			w.ignore(ev, gen)
		}
		return true, ""
	}
	template := w.ns.Template()
	if d.Template != "" {
		template = d.Template
	}
	var name string
	fileNameOnce := func() string {
		if name == "" {
			n, err := fileName(e.opts.Proc, ev.fd, ev.tid, caller.PID, w.ns.Init)
			if err != nil {
				n = fmt.Sprintf("<fd %d>", ev.fd)
			}
			name = n
		}
		return name
	}
	// open_writers, as ima_rdwr_violation_check: a read open that must be
	// measured while the file is open for write (measured before or not).
	if fn == policy.FileCheck && d.Actions&policy.Measure != 0 && mask&(policy.MayWrite|policy.MayAppend) == 0 && writers > 0 {
		w.violation(template, pcr, fileNameOnce(), w.ns.Algo(), "open_writers", log.WithField("file", fileNameOnce()))
	}
	if !needMeasure && !needAppraise && !needAudit {
		e.stats.cached.Add(1)
		if cachedDeny {
			return false, cachedCause
		}
		if independent {
			w.ignore(ev, gen)
		}
		return true, ""
	}

	log = log.WithField("file", fileNameOnce())

	// security.ima: the kernel hashes in the algorithm it names when
	// appraising, and that digest is also the one measured.
	var xv *appraise.Value
	var xerr error
	if raw, err := getxattr(ev.fd, appraise.XattrName); err == nil {
		xv, xerr = appraise.Parse(raw)
	}
	algo := w.ns.Algo()
	if d.Actions&policy.Appraise != 0 && xv != nil {
		if a, err := xv.HashAlgo(); err == nil {
			algo = a
		}
	}
	digest, changed, herr := hashFile(ev.fd, algo, &st, ev.start.Add(e.opts.Timeout))
	if herr != nil {
		e.stats.errors.Add(1)
		log.WithError(herr).Warn("fanotify: cannot hash file")
		if d.Actions&policy.Measure != 0 {
			// The list must show that something was not measured.
			w.violation(template, pcr, fileNameOnce(), algo, "collect_data", log)
		}
		if d.Actions&policy.Appraise != 0 {
			return false, ReasonCollectData
		}
		return w.failureMode(ReasonCollectData)
	}
	if changed {
		w.violation(template, pcr, fileNameOnce(), algo, "ToMToU", log)
	}

	allow = true
	if needMeasure {
		m := measurelog.Measurement{
			FileDigest: digest,
			FileAlgo:   algo,
			Name:       fileNameOnce(),
			Namespace:  w.ns.Label(),
			UID:        uidMap.toNS(st.Uid),
			GID:        gidMap.toNS(st.Gid),
			Mode:       uint16(st.Mode),
		}
		if xv != nil && xv.IsSignature() {
			m.Sig = xv.Raw
		}
		entry, err := measurelog.NewEntry(template, pcr, m)
		if err == nil {
			err = e.reg.Record(w.ns, entry)
		}
		if err != nil {
			e.stats.errors.Add(1)
			log.WithError(err).Error("fanotify: record measurement")
			if w.failClosed() {
				allow, reason = false, ReasonError
			} else {
				// Allowed unmeasured: the list must show it (imans
				// keeps a violation it cannot write yet and writes
				// it first once the state directory takes writes).
				w.violation(template, pcr, fileNameOnce(), algo, "record", log)
			}
		} else {
			e.stats.measured.Add(1)
			w.mu.Lock()
			if w.gen == gen {
				fs.measured[pcr] = true
			}
			w.mu.Unlock()
		}
	}
	if needAppraise {
		aerr := xerr
		if aerr != nil {
			aerr = &appraise.Error{Cause: appraise.CauseInvalidXattr, Err: xerr}
		} else if keys, kerr := w.keyring(); kerr != nil {
			aerr = &appraise.Error{Cause: appraise.CauseUnknownError, Err: kerr}
		} else {
			aerr = appraise.Verify(xv, digest, keys, req)
		}
		w.mu.Lock()
		if w.gen == gen {
			fs.appraised, fs.appraiseErr = true, aerr
			fs.appraisedSig = aerr == nil && xv != nil && xv.IsSignature()
		}
		w.mu.Unlock()
		if aerr != nil {
			allow, reason = false, string(appraise.CauseOf(aerr))
			log.WithFields(logrus.Fields{"cause": string(appraise.CauseOf(aerr)), "hash": fmt.Sprintf("%s:%x", algo, digest)}).
				WithError(aerr).Warn("fanotify: appraisal failed, access denied")
		}
	}
	if needAudit {
		log.WithFields(logrus.Fields{"hash": fmt.Sprintf("%s:%x", algo, digest), "uid": pev.UID, "audit": "ima"}).Info("fanotify: audit")
		w.mu.Lock()
		if w.gen == gen {
			fs.audited = true
		}
		w.mu.Unlock()
	}
	if allow && !changed && independent {
		w.ignore(ev, gen)
	}
	return allow, reason
}

// violation records a violation entry (all-zero digest, PCR extended with
// 0xff) in the container's list and counter.
func (w *watch) violation(template string, pcr uint32, name string, algo measurelog.Algo, kind string, log *logrus.Entry) {
	entry, err := measurelog.NewViolation(template, pcr, name, algo)
	if err == nil {
		err = w.e.reg.Record(w.ns, entry)
	}
	if err != nil {
		log.WithError(err).WithField("violation", kind).Error("fanotify: record violation")
		return
	}
	w.e.stats.violations.Add(1)
	log.WithField("violation", kind).Warn("fanotify: measurement violation")
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

// hashFile hashes the file behind fd. changed reports that it was modified
// while being hashed (its times or size differ from before).
func hashFile(fd int, algo measurelog.Algo, before *unix.Stat_t, deadline time.Time) (digest []byte, changed bool, err error) {
	h := algo.New()
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
	return h.Sum(nil), changed, nil
}

// getxattr reads an extended attribute of fd of any size.
func getxattr(fd int, name string) ([]byte, error) {
	buf := make([]byte, 512)
	for {
		n, err := unix.Fgetxattr(fd, name, buf)
		if err == unix.ERANGE {
			sz, err := unix.Fgetxattr(fd, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
