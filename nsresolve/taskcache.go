package nsresolve

import (
	"container/list"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultTaskCacheSize is the number of tasks whose handles a Resolver
// keeps (two open fds each: a pidfd and its /proc/TID directory).
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
	pidfd   int  // pidfd_open(tid, PIDFD_THREAD)
	dir     int  // /proc/TID, O_PATH
	pidNS   NSID // task_active_pid_ns: fixed for the task's life
	refs    int  // resolutions using the fds
	evicted bool // out of the map: close the fds once refs is 0
	elem    *list.Element
}

// callerCached is Caller through the task cache: a hit costs PIDFD_GET_INFO
// on the cached pidfd (the task is alive, so tid still names it; and its
// ids) and a stat of ns/user below its /proc directory, plus capget and a
// stat of ns/mnt when want asks for them. A cached task that died (its
// number may name another task now) is dropped and tid resolved afresh.
func (r *Resolver) callerCached(tid int, want Want) (*Caller, error) {
	if t := r.acquireTask(tid); t != nil {
		c, err := r.fromTask(t, want)
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
	c, err := r.fromTask(t, want)
	if err != nil {
		closeTask(t)
		return nil, err
	}
	r.insertTask(t)
	return c, nil
}

// openTask looks tid up (pidfd_open, then /proc/TID) and reads its pid
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
	t := &task{tid: tid, pidfd: pidfd, dir: -1}
	if t.dir, err = openProcDir(tid); err != nil {
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

// fromTask resolves the cached task t: what can change is read now.
// capget takes a number, not a handle: it comes first, and PIDFD_GET_INFO
// after it finds the task alive, so the number named t's task across it.
func (r *Resolver) fromTask(t *task, want Want) (*Caller, error) {
	c := &Caller{TID: t.tid, PidNS: t.pidNS}
	if want&WantCaps != 0 {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3, Pid: int32(t.tid)}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return nil, fmt.Errorf("resolve caller tid %d: capget: %w", t.tid, goneErr(err))
		}
		c.CapEff = uint64(data[0].Effective) | uint64(data[1].Effective)<<32
	}
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID | unix.PIDFD_INFO_CREDS}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(t.pidfd), unix.PIDFD_GET_INFO, uintptr(unsafe.Pointer(&info))); e != 0 {
		if e == unix.ENOTTY || e == unix.EINVAL {
			return nil, errNoPidfdInfo
		}
		return nil, fmt.Errorf("resolve caller tid %d: PIDFD_GET_INFO: %w", t.tid, goneErr(e))
	}
	const need = unix.PIDFD_INFO_PID | unix.PIDFD_INFO_CREDS
	if info.Mask&need != need {
		return nil, errNoPidfdInfo
	}
	if int(info.Pid) != t.tid {
		return nil, fmt.Errorf("resolve caller tid %d: pidfd names tid %d: %w", t.tid, info.Pid, ErrGone)
	}
	c.PID = int(info.Tgid)
	c.UID, c.EUID, c.GID, c.EGID = info.Ruid, info.Euid, info.Rgid, info.Egid
	var err error
	if c.UserNS, err = statAt(t.dir, "ns/user"); err != nil {
		return nil, fmt.Errorf("resolve caller tid %d: %w", t.tid, err)
	}
	if want&WantMntNS != 0 {
		if c.MntNS, err = statAt(t.dir, "ns/mnt"); err != nil {
			return nil, fmt.Errorf("resolve caller tid %d: %w", t.tid, err)
		}
	}
	return c, nil
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
	for _, fd := range []*int{&t.pidfd, &t.dir} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}
