package nsresolve

import (
	"container/list"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultTaskCacheSize is the number of tasks whose handles a Resolver
// keeps (two open fds each: a pidfd and its /proc/TID/ns directory).
const DefaultTaskCacheSize = 512

// Want names the Caller fields a resolution fills beyond those it always
// fills (TID, PID, PidNS, UserNS and the ids): each costs a system call.
type Want uint8

const (
	WantCaps  Want = 1 << iota // CapEff (capget)
	WantMntNS                  // MntNS
	WantAll   = WantCaps | WantMntNS
)

// task is a cached caller: two handles bound to one task's struct pid
// (never to whatever task later gets the same number) and the pid
// namespace, which a task keeps for life. Everything that can change while
// it lives (ids, capabilities, user and mount namespace: setuid, capset,
// setns, unshare) is read afresh through the handles at every resolution.
type task struct {
	tid     int
	pid     int  // thread group id (a task keeps it for life)
	pidfd   int  // pidfd_open(tid, PIDFD_THREAD)
	nsdir   int  // /proc/TID/ns, O_PATH
	pidNS   NSID // task_active_pid_ns: fixed for the task's life
	refs    int  // resolutions using the fds
	evicted bool // out of the map: close the fds once refs is 0
	elem    *list.Element
}

// Ids are a FUSE request's caller ids: its fsuid and fsgid, host ids (the
// mount's user namespace is the initial one).
type Ids struct{ UID, GID uint32 }

// callerCached is Caller through the task cache: a hit costs PIDFD_GET_INFO
// on the cached pidfd (the task is alive, so tid still names it; and its
// ids) and a readlink of user below its /proc/TID/ns directory, plus
// capget and a readlink of mnt when want asks for them. With the request's
// ids (non-nil ids) a hit skips PIDFD_GET_INFO: the readlink below the
// directory, which fails once the task is reaped, is the check that tid
// still names it. A cached task that died (its number may name another task now) is
// dropped and tid resolved afresh.
func (r *Resolver) callerCached(tid int, want Want, ids *Ids) (*Caller, error) {
	if t := r.acquireTask(tid); t != nil {
		c, err := r.fromTask(t, want, ids)
		r.releaseTask(t)
		if err == nil {
			r.taskHits.Add(1)
			return c, nil
		}
		r.dropTask(t)
		if !errors.Is(err, ErrGone) {
			return nil, err
		}
	}
	r.taskMisses.Add(1)
	t, err := r.openTask(tid)
	if err != nil {
		return nil, err
	}
	c, err := r.fromTask(t, want, nil)
	if err != nil {
		closeTask(t)
		return nil, err
	}
	t.pid = c.PID
	if ids != nil {
		c.UID, c.EUID, c.GID, c.EGID = ids.UID, ids.UID, ids.GID, ids.GID
	}
	r.insertTask(t)
	return c, nil
}

// openTask looks tid up (pidfd_open, then /proc/TID/ns) and reads its pid
// namespace. The directory is opened by number after the pidfd: fromTask's
// PIDFD_GET_INFO, which finds the pidfd's task alive, proves that number
// named the same task all along.
func (r *Resolver) openTask(tid int) (*task, error) {
	pidfd, err := unix.PidfdOpen(tid, unix.PIDFD_THREAD)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			return nil, errNoPidfdInfo
		}
		return nil, fmt.Errorf("resolve caller tid %d: pidfd_open: %w", tid, goneErr(err))
	}
	t := &task{tid: tid, pidfd: pidfd, nsdir: -1}
	if t.nsdir, err = openProcDir(tid, "ns"); err != nil {
		closeTask(t)
		return nil, fmt.Errorf("resolve caller tid %d: %w", tid, err)
	}
	fd, err := unix.IoctlRetInt(pidfd, unix.PIDFD_GET_PID_NAMESPACE)
	if err == nil {
		t.pidNS, err = fstatNS(fd)
		if err == nil {
			r.cacheFD(fd, t.pidNS) // takes fd
		} else {
			unix.Close(fd)
		}
	} else if errors.Is(err, unix.ENOTTY) {
		err = errNoPidfdInfo
	} else if errors.Is(err, unix.EOPNOTSUPP) && exitedSoon(pidfd) {
		err = fmt.Errorf("PIDFD_GET_PID_NAMESPACE: %w (%w)", ErrGone, err)
	}
	if err != nil {
		closeTask(t)
		if errors.Is(err, errNoPidfdInfo) {
			return nil, err
		}
		return nil, fmt.Errorf("resolve caller tid %d: %w", tid, goneErr(err))
	}
	return t, nil
}

// fromTask resolves the cached task t: what can change is read now (the
// ids from the request when ids is not nil). capget takes a number, not a
// handle: it comes first, and the reads through t's handles after it find
// the task alive, so the number named t's task across it.
func (r *Resolver) fromTask(t *task, want Want, ids *Ids) (*Caller, error) {
	c := &Caller{TID: t.tid, PID: t.pid, PidNS: t.pidNS}
	if want&WantCaps != 0 {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3, Pid: int32(t.tid)}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return nil, fmt.Errorf("resolve caller tid %d: capget: %w", t.tid, goneErr(err))
		}
		c.CapEff = uint64(data[0].Effective) | uint64(data[1].Effective)<<32
	}
	if ids != nil {
		c.UID, c.EUID, c.GID, c.EGID = ids.UID, ids.UID, ids.GID, ids.GID
	} else if err := taskInfo(t, c); err != nil {
		return nil, err
	}
	var err error
	if c.UserNS, err = r.nsOf(t, "user"); err != nil {
		return nil, fmt.Errorf("resolve caller tid %d: %w", t.tid, err)
	}
	if want&WantMntNS != 0 {
		if c.MntNS, err = r.nsOf(t, "mnt"); err != nil {
			return nil, fmt.Errorf("resolve caller tid %d: %w", t.tid, err)
		}
	}
	return c, nil
}

// taskInfo fills c's thread group and ids through t's pidfd
// (PIDFD_GET_INFO), which fails once the task is reaped.
func taskInfo(t *task, c *Caller) error {
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID | unix.PIDFD_INFO_CREDS}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(t.pidfd), unix.PIDFD_GET_INFO, uintptr(unsafe.Pointer(&info))); e != 0 {
		if e == unix.ENOTTY || e == unix.EINVAL {
			return errNoPidfdInfo
		}
		return fmt.Errorf("resolve caller tid %d: PIDFD_GET_INFO: %w", t.tid, goneErr(e))
	}
	const need = unix.PIDFD_INFO_PID | unix.PIDFD_INFO_CREDS
	if info.Mask&need != need {
		return errNoPidfdInfo
	}
	if int(info.Pid) != t.tid {
		return fmt.Errorf("resolve caller tid %d: pidfd names tid %d: %w", t.tid, info.Pid, ErrGone)
	}
	c.PID = int(info.Tgid)
	c.UID, c.EUID, c.GID, c.EGID = info.Ruid, info.Euid, info.Rgid, info.Egid
	return nil
}

// nsOf returns the NSID of t's namespace kind ("user", "mnt") by a
// readlink below its ns directory ("user:[4026531837]"): half the cost of
// a stat, which follows the link into nsfs. Every namespace is an inode of
// the one nsfs, so the device is the daemon's own namespaces'. A reaped
// task's links fail (ENOENT, or EACCES while it is being reaped: then its
// pidfd tells).
func (r *Resolver) nsOf(t *task, kind string) (NSID, error) {
	var buf [64]byte
	n, err := unix.Readlinkat(t.nsdir, kind, buf[:])
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || (errors.Is(err, unix.EACCES) && pidfdGone(t.pidfd)) {
			return NSID{}, fmt.Errorf("readlink ns/%s: %w (%w)", kind, ErrGone, err)
		}
		return NSID{}, fmt.Errorf("readlink ns/%s: %w", kind, err)
	}
	link := string(buf[:n])
	if r.nsDev == 0 || !strings.HasPrefix(link, kind+":[") || !strings.HasSuffix(link, "]") {
		return statAt(t.nsdir, kind) // not the form this reads: stat it
	}
	ino, err := strconv.ParseUint(link[len(kind)+2:len(link)-1], 10, 64)
	if err != nil {
		return statAt(t.nsdir, kind)
	}
	return NSID{Dev: r.nsDev, Ino: ino}, nil
}

// pidfdGone reports whether the task of pidfd has been reaped.
func pidfdGone(pidfd int) bool {
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(pidfd), unix.PIDFD_GET_INFO, uintptr(unsafe.Pointer(&info)))
	return e == unix.ESRCH
}

// acquireTask returns the cached task of tid with a reference held, or nil.
func (r *Resolver) acquireTask(tid int) *task {
	r.taskMu.Lock()
	defer r.taskMu.Unlock()
	t := r.tasks[tid]
	if t == nil {
		return nil
	}
	t.refs++
	r.taskLRU.MoveToFront(t.elem)
	return t
}

func (r *Resolver) releaseTask(t *task) {
	r.taskMu.Lock()
	defer r.taskMu.Unlock()
	t.refs--
	if t.evicted && t.refs == 0 {
		closeTask(t)
	}
}

// dropTask evicts t (if it still is tid's entry).
func (r *Resolver) dropTask(t *task) {
	r.taskMu.Lock()
	defer r.taskMu.Unlock()
	if r.tasks[t.tid] == t {
		r.evictTaskLocked(t)
	}
}

// insertTask caches t (unless caching is off or another resolution cached
// the same tid meanwhile: then t is closed), evicting the least recently
// used task beyond the bound.
func (r *Resolver) insertTask(t *task) {
	r.taskMu.Lock()
	defer r.taskMu.Unlock()
	if r.taskMax <= 0 {
		closeTask(t)
		return
	}
	if old := r.tasks[t.tid]; old != nil {
		r.evictTaskLocked(old) // a dead task's entry: t is the live one
	}
	t.elem = r.taskLRU.PushFront(t)
	r.tasks[t.tid] = t
	for len(r.tasks) > r.taskMax {
		r.evictTaskLocked(r.taskLRU.Back().Value.(*task))
	}
}

func (r *Resolver) evictTaskLocked(t *task) {
	delete(r.tasks, t.tid)
	r.taskLRU.Remove(t.elem)
	t.evicted = true
	if t.refs == 0 {
		closeTask(t)
	}
}

// closeTasks empties the task cache (Close).
func (r *Resolver) closeTasks() {
	r.taskMu.Lock()
	defer r.taskMu.Unlock()
	for _, t := range r.tasks {
		r.evictTaskLocked(t)
	}
}

// TaskCacheStats returns the resolutions answered through a cached task
// (hits) and those that had to look the tid up (misses), and the number of
// cached tasks.
func (r *Resolver) TaskCacheStats() (hits, misses uint64, size int) {
	r.taskMu.Lock()
	size = len(r.tasks)
	r.taskMu.Unlock()
	return r.taskHits.Load(), r.taskMisses.Load(), size
}

func closeTask(t *task) {
	for _, fd := range []*int{&t.pidfd, &t.nsdir} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}
