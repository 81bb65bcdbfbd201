package fanotify

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/appraise"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/policy"
)

// watch is one container's fanotify group, its marks and its caches. One
// group per container keeps ignore marks per container: a file measured in
// one container is still seen when another one opens it.
type watch struct {
	e     *Engine
	ns    *imans.Namespace
	g     *group
	log   *logrus.Entry
	queue chan *event // events waiting for this container's workers
	// running counts the reader and the workers (Engine.Suspend waits for
	// them to answer what was read).
	running sync.WaitGroup

	syncMu sync.Mutex // one sync at a time

	files *fileCache // what the container did with its files (own lock)

	mu          sync.Mutex
	gen         uint64               // bumped when policy or keys change: cache and ignore marks flushed
	policy      policy.Policy        // current policy (rule pointers compare for change)
	mask        uint64               // event mask of our marks
	hasAppraise bool                 // policy has appraise rules: fail closed
	mmapAppr    bool                 // policy appraises MMAP_CHECK(_REQPROT) (appraisesMmap)
	independent map[policy.Func]bool // decisions for Func don't depend on the caller
	mountinfo   []byte               // last container mountinfo seen
	fsMarked    map[uint64]bool
	mountMarked map[int]bool
	ignoreMarks int  // ignore marks added since the last flush
	remark      bool // the mask widened: marks to be re-added now
	takenOver   bool // the group came from the keeper: a previous daemon's
	highWater   int  // ... which read events up to this descriptor number
	uidMap      idMap
	gidMap      idMap
	keys        *appraise.Keyring
	keysStamp   string
	closed      bool
}

func newWatch(e *Engine, ns *imans.Namespace) (*watch, error) {
	g, takenOver, highWater, err := e.groupFor(ns)
	if err != nil {
		return nil, err
	}
	w := &watch{
		e: e, ns: ns, g: g, takenOver: takenOver, highWater: highWater,
		queue:       make(chan *event, e.opts.QueueLen),
		log:         e.log.WithFields(logrus.Fields{"id": ns.ID, "source": "fanotify"}),
		fsMarked:    map[uint64]bool{},
		mountMarked: map[int]bool{},
		files:       newFileCache(),
		independent: map[policy.Func]bool{},
	}
	if w.uidMap, err = readIDMap(fmt.Sprintf("%s/%d/uid_map", e.opts.Proc, ns.Init)); err != nil {
		g.close()
		return nil, err
	}
	if w.gidMap, err = readIDMap(fmt.Sprintf("%s/%d/gid_map", e.opts.Proc, ns.Init)); err != nil {
		g.close()
		return nil, err
	}
	return w, nil
}

func (w *watch) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

func (w *watch) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	w.g.close()
}

// read reads events until the group is closed.
func (w *watch) read() {
	buf := make([]byte, 64<<10)
	var evs []rawEvent
	for {
		n, err := w.g.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				return // closed, or stopped reading (Engine.Suspend)
			}
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			w.log.WithError(err).Error("fanotify: read events; watch stopped")
			return
		}
		evs, err = parseEvents(buf[:n], evs[:0])
		if err != nil {
			w.log.WithError(err).Error("fanotify: parse events")
		}
		if k := w.e.opts.Keeper; k != nil {
			// Before any of these is decided: should this daemon die now,
			// its successor answers every descriptor number up to the mark.
			maxFD := -1
			for _, re := range evs {
				maxFD = max(maxFD, int(re.Fd))
			}
			if err := k.HighWater(maxFD); err != nil {
				w.log.WithError(err).Warn("fanotify: keeper: report event descriptors")
			}
		}
		for _, re := range evs {
			w.dispatch(re)
		}
	}
}

func (w *watch) dispatch(re rawEvent) {
	if re.Fd == unix.FAN_NOFD {
		w.log.Error("fanotify: event queue overflow (notification events lost)")
		return
	}
	fd, tid := int(re.Fd), int(re.TID)
	if re.Mask&(maskExec|maskOpen) == 0 {
		if re.Mask&maskCloseWrite != 0 {
			w.closedWriter(fd)
		}
		unix.Close(fd)
		return
	}
	e := w.e
	e.stats.events.Add(1)
	ev := &event{w: w, fd: fd, tid: tid, mask: re.Mask, start: time.Now()}
	if isSelf(e.opts.Proc, tid) {
		ev.answer(true, "")
		unix.Close(fd)
		return
	}
	ev.timer = time.AfterFunc(e.opts.Timeout, func() {
		if !ev.done.Load() {
			e.stats.timeouts.Add(1)
			allow, reason := w.failureMode(ReasonTimeout)
			w.log.WithFields(logrus.Fields{"tid": tid, "allow": allow, "timeout": e.opts.Timeout}).Warn("fanotify: event not decided in time")
			ev.answer(allow, reason)
		}
	})
	select {
	case w.queue <- ev:
	default:
		e.stats.overflows.Add(1)
		ev.timer.Stop()
		allow, reason := w.failureMode(ReasonOverflow)
		log := w.log.WithFields(logrus.Fields{"tid": tid, "allow": allow})
		log.Warn("fanotify: worker queue full")
		ev.answer(allow, reason)
		if allow && re.Mask&maskExec != 0 {
			// An exec let through unmeasured: the list says so. (An
			// overflowed open may not even match a FILE_CHECK rule, and
			// deciding that is the work we have no room for.)
			if name, err := fileName(e.opts.Proc, fd, tid); err == nil {
				w.violation(w.ns.Template(), imans.DefaultPCR, w.noFileViolation(name), "queue_overflow", log)
			}
		}
		unix.Close(fd)
	}
}

// failClosed is the answer mode when an event cannot be decided.
func (w *watch) failClosed() bool {
	if f := w.e.opts.FailClosed; f != nil {
		return f(w.ns)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hasAppraise
}

// closedWriter counts down the writers of the file fd refers to.
func (w *watch) closedWriter(fd int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return
	}
	w.files.closeWrite(inoKey{st.Dev, st.Ino})
}

// sync brings policy-derived state and marks up to date.
func (w *watch) sync() error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.refreshPolicy()
	w.mu.Lock()
	appraising := w.hasAppraise
	w.mu.Unlock()
	if appraising {
		// A key removed from the directory must not stay trusted through
		// ignore marks and cached results: reloading flushes them.
		if _, err := w.keyring(); err != nil {
			w.log.WithError(err).Warn("fanotify: keyring")
		}
	}
	return w.scanMounts()
}

// refreshPolicy notices a policy change: it drops the cache and the ignore
// marks (decisions may differ now) and widens the event mask when the new
// policy needs FILE_CHECK.
func (w *watch) refreshPolicy() (widened bool) {
	p := w.ns.Policy()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.mask != 0 && slices.Equal(p, w.policy) {
		return false
	}
	w.policy = p
	w.invalidateLocked("policy changed")
	for _, fn := range []policy.Func{policy.BPRMCheck, policy.FileCheck, policy.MMAPCheck, policy.MMAPCheckReqprot} {
		w.independent[fn] = !p.DependsOnCaller(fn)
	}
	w.hasAppraise = p.Appraises()
	w.mmapAppr = appraisesMmap(p)
	needOpen := p.Uses(policy.FileCheck, policy.Measure|policy.Appraise|policy.Audit) ||
		w.e.opts.Mmap != nil && w.mmapAppr // libraries are appraised at their open
	mask := uint64(maskExec)
	if needOpen {
		mask |= maskOpen | maskCloseWrite
	}
	if mask|w.mask != w.mask {
		// Marks are re-added with the wider mask on the next scan.
		w.mask |= mask
		w.fsMarked = map[uint64]bool{}
		w.mountMarked = map[int]bool{}
		w.mountinfo = nil
		w.remark = true
		return true
	}
	return false
}

// takeRemark reports (once) that the marks must be re-added with a wider
// mask.
func (w *watch) takeRemark() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.remark
	w.remark = false
	return r
}

// invalidateLocked drops everything derived from the policy or the keys.
func (w *watch) invalidateLocked(why string) {
	w.gen++
	w.files.reset(w.gen)
	w.ignoreMarks = 0
	if err := w.g.flushInodeMarks(); err != nil && !w.closed {
		w.log.WithError(err).Warn("fanotify: flush ignore marks")
	}
	if m := w.e.opts.Mmap; m != nil {
		m.Invalidated(w.ns)
	}
	w.log.WithField("why", why).Debug("fanotify: cache flushed")
}

// scanMounts marks the container's file systems: a filesystem mark on each
// superblock that is the container's own, mount marks on its mounts of file
// systems the host shares (see hostView.classify).
func (w *watch) scanMounts() error {
	proc := w.e.opts.Proc
	pid := w.ns.Init
	info, err := os.ReadFile(fmt.Sprintf("%s/%d/mountinfo", proc, pid))
	if err != nil {
		return fmt.Errorf("scan mounts of pid %d: %w", pid, err)
	}
	w.mu.Lock()
	unchanged := bytes.Equal(info, w.mountinfo)
	mask := w.mask
	w.mu.Unlock()
	if unchanged {
		return nil
	}
	hv, err := readHostView(proc)
	if err != nil {
		return fmt.Errorf("scan mounts of pid %d: %w", pid, err)
	}
	prePivot, err := w.checkNotHost()
	if err != nil {
		return err
	}
	mounts, err := parseMountInfo(info)
	if err != nil {
		return fmt.Errorf("scan mounts of pid %d: %w", pid, err)
	}
	if prePivot {
		mounts = newMounts(mounts, hv.mounts)
	}
	rootFD, err := unix.Open(fmt.Sprintf("%s/%d/root", proc, pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("scan mounts of pid %d: open root: %w", pid, err)
	}
	defer unix.Close(rootFD)
	var errs []error
	for _, m := range mounts {
		kind := hv.classify(m)
		if prePivot && kind == markFilesystem {
			// Before pivot_root the table may hold copies of host mounts
			// the host has since unmounted (not in its table any more):
			// only mount marks, which no other namespace's accesses hit.
			// The rescan after pivot_root adds the filesystem marks.
			kind = markMount
		}
		w.mu.Lock()
		done := kind == markNone || (kind == markFilesystem && w.fsMarked[m.Dev]) || (kind == markMount && w.mountMarked[m.ID])
		w.mu.Unlock()
		if done {
			continue
		}
		fd, err := openInRoot(rootFD, m.MountPoint)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// The path may have been over-mounted since mountinfo was read:
		// mark only what it resolves to now if it is the same device.
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Dev != m.Dev {
			unix.Close(fd)
			continue
		}
		if kind == markFilesystem {
			err = w.g.markFilesystem(fd, mask)
		} else {
			err = w.g.markMount(fd, mask)
		}
		unix.Close(fd)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s mark on %s (%s): %w", kind, m.MountPoint, m.FSType, err))
			continue
		}
		w.log.WithFields(logrus.Fields{"mount": m.MountPoint, "fstype": m.FSType, "mark": kind.String()}).Debug("fanotify: marked")
		w.mu.Lock()
		if kind == markFilesystem {
			w.fsMarked[m.Dev] = true
		} else {
			w.mountMarked[m.ID] = true
		}
		w.mu.Unlock()
	}
	if len(errs) == 0 {
		w.mu.Lock()
		w.mountinfo = info
		w.mu.Unlock()
	}
	return errors.Join(errs...)
}

// checkNotHost refuses to mark a container that shares the host's (the
// daemon's) mount namespace: its mounts are the host's. It reports whether
// the container still has the host's root (not pivoted yet): then only the
// container's own mounts are marked (see newMounts).
func (w *watch) checkNotHost() (prePivot bool, err error) {
	proc := w.e.opts.Proc
	var a, b unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("%s/%d/ns/mnt", proc, w.ns.Init), &a); err != nil {
		return false, fmt.Errorf("scan mounts of pid %d: %w", w.ns.Init, err)
	}
	if err := unix.Stat(proc+"/self/ns/mnt", &b); err != nil {
		return false, fmt.Errorf("scan mounts: host mount ns: %w", err)
	}
	if a.Ino == b.Ino && a.Dev == b.Dev {
		return false, fmt.Errorf("scan mounts of pid %d: container shares the host mount namespace; not marked", w.ns.Init)
	}
	if err := unix.Stat(fmt.Sprintf("%s/%d/root", proc, w.ns.Init), &a); err != nil {
		return false, fmt.Errorf("scan mounts of pid %d: %w", w.ns.Init, err)
	}
	if err := unix.Stat(proc+"/self/root", &b); err != nil {
		return false, fmt.Errorf("scan mounts: host root: %w", err)
	}
	return a.Ino == b.Ino && a.Dev == b.Dev, nil
}

// dirStamp summarizes a directory and its entries' names, sizes and
// modification times: it changes when a key file is added, removed or
// rewritten in place.
func dirStamp(dir string) string {
	fi, err := os.Stat(dir)
	if err != nil {
		return "missing"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d", fi.ModTime().UnixNano())
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			fmt.Fprintf(&b, "|%s:%d:%d", e.Name(), info.Size(), info.ModTime().UnixNano())
		}
	}
	return b.String()
}

// keyring returns the container's keys, reloading them when the key
// directory changed (which also drops cached appraisal results).
func (w *watch) keyring() (*appraise.Keyring, error) {
	if w.e.opts.KeyDir == "" {
		return &appraise.Keyring{}, nil
	}
	dir := filepath.Join(w.e.opts.KeyDir, w.ns.ID)
	stamp := dirStamp(dir)
	w.mu.Lock()
	if w.keys != nil && stamp == w.keysStamp {
		k := w.keys
		w.mu.Unlock()
		return k, nil
	}
	w.mu.Unlock()
	k, err := appraise.LoadKeyring(dir)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	if w.keys != nil {
		w.invalidateLocked("keys changed")
	}
	w.keys, w.keysStamp = k, stamp
	w.mu.Unlock()
	w.log.WithFields(logrus.Fields{"dir": dir, "keys": k.Len()}).Info("fanotify: keyring loaded")
	return k, nil
}
