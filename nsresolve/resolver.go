package nsresolve

import (
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// DefaultCacheSize is the number of pid namespaces whose ancestry a Resolver
// made by NewResolver keeps (each costs one open fd).
const DefaultCacheSize = 1024

// ResolverOptions configure a Resolver.
type ResolverOptions struct {
	// CacheSize bounds the ancestry cache (entries, one pinned nsfs fd
	// each). 0 means DefaultCacheSize; negative disables caching.
	CacheSize int
	// ProcOnly resolves callers through /proc/TID text files only, as on
	// kernels before 6.13 (no PIDFD_GET_INFO). For tests and comparison.
	ProcOnly bool
	// TaskCacheSize bounds the task cache (tasks, two fds each; see
	// Caller). 0 means DefaultTaskCacheSize; negative disables it.
	TaskCacheSize int
}

// Resolver resolves callers and caches pid-namespace ancestry.
//
// The cache maps a pid namespace's NSID to the NSIDs of its ancestors. An
// entry holds an open fd to its namespace: while it is open the namespace
// (and, through the kernel's parent reference, each ancestor) cannot be
// freed, so no other namespace can get the same inode number and the entry
// can't become wrong. The cache is an LRU bounded by CacheSize; eviction
// closes the fd (deferred while an Owner call is using the entry).
// A Resolver is safe for concurrent use.
type Resolver struct {
	mu      sync.Mutex
	max     int
	entries map[NSID]*entry
	lru     *list.List // front = most recently used; values are *entry

	hostPid, hostUser NSID
	hostErr           error
	nsDev             uint64 // nsfs's device (every NSID's Dev); 0: unknown

	hits, misses atomic.Uint64
	procOnly     atomic.Bool // pidfd ioctls unsupported (or ProcOnly)

	// uid maps of user namespaces, each pinned by an open ns fd (so the
	// NSID can't name another namespace while cached); same bound as the
	// ancestry cache. Maps are write-once; an empty (unwritten) one is
	// never cached.
	userMu  sync.Mutex
	users   map[NSID]*userEntry
	userLRU *list.List

	// The task cache (taskcache.go): tid → handles of the task it names.
	taskMu               sync.Mutex
	taskMax              int
	tasks                map[int]*task
	taskLRU              *list.List
	taskHits, taskMisses atomic.Uint64
}

type userEntry struct {
	id     NSID
	fd     int
	uidMap []byte
	elem   *list.Element
}

type entry struct {
	id        NSID
	fd        int
	ancestors []NSID // parent first; immutable once built
	refs      int
	evicted   bool
	elem      *list.Element
}

// NewResolver returns a Resolver with an empty cache of DefaultCacheSize.
func NewResolver() *Resolver { return NewResolverWithOptions(ResolverOptions{}) }

// NewResolverWithOptions returns a Resolver configured by opts.
func NewResolverWithOptions(opts ResolverOptions) *Resolver {
	r := &Resolver{max: opts.CacheSize, entries: map[NSID]*entry{}, lru: list.New(), users: map[NSID]*userEntry{}, userLRU: list.New(),
		taskMax: opts.TaskCacheSize, tasks: map[int]*task{}, taskLRU: list.New()}
	if r.max == 0 {
		r.max = DefaultCacheSize
	}
	if r.taskMax == 0 {
		r.taskMax = DefaultTaskCacheSize
	}
	r.procOnly.Store(opts.ProcOnly)
	dir, err := unix.Open("/proc/thread-self", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		r.hostErr = fmt.Errorf("open /proc/thread-self: %w", err)
		return r
	}
	defer unix.Close(dir)
	if r.hostPid, err = statAt(dir, "ns/pid"); err != nil {
		r.hostErr = fmt.Errorf("daemon's own pid namespace: %w", err)
	} else if r.hostUser, err = statAt(dir, "ns/user"); err != nil {
		r.hostErr = fmt.Errorf("daemon's own user namespace: %w", err)
	}
	r.nsDev = r.hostUser.Dev
	return r
}

// HostPidNS is the daemon's own pid namespace (the initial one when the
// daemon runs, as it must, in the host pid namespace). Owner stops there.
func (r *Resolver) HostPidNS() NSID { return r.hostPid }

// HostUserNS is the daemon's own user namespace; pass it to Privileged for
// the host view.
func (r *Resolver) HostUserNS() NSID { return r.hostUser }

// CacheStats returns the number of Owner calls answered from the cache
// (hits) and those that had to open /proc/TID again (misses), and the number
// of cached namespaces.
func (r *Resolver) CacheStats() (hits, misses uint64, size int) {
	r.mu.Lock()
	size = len(r.entries)
	r.mu.Unlock()
	return r.hits.Load(), r.misses.Load(), size
}

// Close releases every cached namespace and task fd. The Resolver stays
// usable (uncached) after Close.
func (r *Resolver) Close() error {
	r.closeTasks()
	r.mu.Lock()
	for id, e := range r.entries {
		delete(r.entries, id)
		r.lru.Remove(e.elem)
		r.dropLocked(e)
	}
	r.mu.Unlock()
	r.userMu.Lock()
	for id, u := range r.users {
		delete(r.users, id)
		r.userLRU.Remove(u.elem)
		unix.Close(u.fd)
	}
	r.userMu.Unlock()
	return nil
}

// Owner walks from c.PidNS up the pid-namespace ancestry (NS_GET_PARENT) and
// returns the first namespace for which registered() is true. ok=false means
// no registered namespace was found before the daemon's own (host) pid
// namespace; the returned NSID is then HostPidNS(). registered is never
// asked about the host pid namespace.
//
// c must describe a task that is still alive (call Owner while serving the
// request c was resolved for: the requesting thread is blocked in the kernel
// then, which keeps its pid namespace and thus c.PidNS valid). If the task is
// gone and the ancestry is not cached, the error wraps ErrGone.
func (r *Resolver) Owner(c *Caller, registered func(NSID) bool) (NSID, bool, error) {
	if r.hostErr != nil {
		return NSID{}, false, r.hostErr
	}
	if c.PidNS == r.hostPid {
		return r.hostPid, false, nil
	}
	e := r.acquire(c.PidNS)
	if e == nil {
		r.misses.Add(1)
		var err error
		if e, err = r.load(c); err != nil {
			return NSID{}, false, err
		}
	} else {
		r.hits.Add(1)
	}
	defer r.release(e)
	if registered(e.id) {
		return e.id, true, nil
	}
	for _, id := range e.ancestors {
		if id == r.hostPid {
			return r.hostPid, false, nil
		}
		if registered(id) {
			return id, true, nil
		}
	}
	// The walk ended above or beside the daemon's pid namespace: not ours.
	return r.hostPid, false, nil
}

// load builds (and caches, if enabled) the ancestry of c.PidNS by opening
// /proc/c.TID again, checking it is still the same pid namespace.
func (r *Resolver) load(c *Caller) (*entry, error) {
	dir, err := openProcDir(c.TID)
	if err != nil {
		return nil, fmt.Errorf("pid namespace ancestry of tid %d: %w", c.TID, err)
	}
	defer unix.Close(dir)
	e, err := r.build(dir, c.PidNS)
	if err != nil {
		return nil, fmt.Errorf("pid namespace ancestry of tid %d: %w", c.TID, err)
	}
	e.refs = 1
	r.insert(e)
	return e, nil
}

// cacheFromDir makes sure the ancestry of the pid namespace id of the task
// behind dir is cached. Errors are ignored (Owner will retry).
func (r *Resolver) cacheFromDir(dir int, id NSID) {
	if !r.needsCache(id) {
		return
	}
	if e, err := r.build(dir, id); err == nil {
		r.insert(e)
	}
}

// build opens ns/pid below dir, checks it is id, and walks its parents.
func (r *Resolver) build(dir int, id NSID) (*entry, error) {
	fd, err := unix.Openat(dir, "ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, procErr(dir, "open", "ns/pid", err)
	}
	return r.buildFD(fd, id)
}

// cacheFD makes sure the ancestry of the pid namespace open as fd (whose id
// is id) is cached. It takes ownership of fd. Errors are ignored (Owner
// will retry through /proc).
func (r *Resolver) cacheFD(fd int, id NSID) {
	if !r.needsCache(id) {
		unix.Close(fd)
		return
	}
	if e, err := r.buildFD(fd, id); err == nil {
		r.insert(e)
	}
}

// needsCache reports whether the ancestry of the pid namespace id is to be
// built and cached: caching is on, id is not the host's and its entry is not
// cached yet (a cached one is marked as recently used).
func (r *Resolver) needsCache(id NSID) bool {
	if r.max < 0 || r.hostErr != nil || id == r.hostPid {
		return false
	}
	r.mu.Lock()
	e, ok := r.entries[id]
	if ok {
		r.lru.MoveToFront(e.elem)
	}
	r.mu.Unlock()
	return !ok
}

// buildFD makes the entry of the pid namespace open as fd (taking
// ownership of fd), checking it is id.
func (r *Resolver) buildFD(fd int, id NSID) (*entry, error) {
	got, err := fstatNS(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if got != id {
		unix.Close(fd)
		return nil, fmt.Errorf("ns/pid is %v, not %v: %w", got, id, ErrGone)
	}
	anc, err := r.ancestors(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &entry{id: id, fd: fd, ancestors: anc}, nil
}

// ancestors returns the parents of the pid namespace open as fd, nearest
// first, up to the topmost one the daemon may see (NS_GET_PARENT → EPERM).
// A cached parent's ancestry is reused: it is valid because fd keeps the
// parent alive.
func (r *Resolver) ancestors(fd int) ([]NSID, error) {
	var out []NSID
	cur := fd
	defer func() {
		if cur != fd {
			unix.Close(cur)
		}
	}()
	for depth := 0; depth < 64; depth++ { // the kernel allows 32 levels
		pfd, err := unix.IoctlRetInt(cur, unix.NS_GET_PARENT)
		if errors.Is(err, unix.EPERM) {
			return out, nil // top reached (initial pid ns or beyond our view)
		}
		if err != nil {
			return nil, fmt.Errorf("ioctl NS_GET_PARENT: %w", err)
		}
		if cur != fd {
			unix.Close(cur)
		}
		cur = pfd
		id, err := fstatNS(cur)
		if err != nil {
			return nil, err
		}
		out = append(out, id)
		if id == r.hostPid {
			return out, nil
		}
		r.mu.Lock()
		if pe, ok := r.entries[id]; ok {
			out = append(out, pe.ancestors...)
			r.mu.Unlock()
			return out, nil
		}
		r.mu.Unlock()
	}
	return nil, fmt.Errorf("ioctl NS_GET_PARENT: pid namespace nesting deeper than 64")
}

func fstatNS(fd int) (NSID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return NSID{}, fmt.Errorf("fstat nsfs fd: %w", err)
	}
	return NSID{Dev: st.Dev, Ino: st.Ino}, nil
}

// acquire returns the cached entry for id with a reference held, or nil.
func (r *Resolver) acquire(id NSID) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[id]
	if !ok {
		return nil
	}
	e.refs++
	r.lru.MoveToFront(e.elem)
	return e
}

// insert adds e (which may hold references) unless caching is off or an
// entry for the same namespace won the race; then e is only kept until its
// references are released.
func (r *Resolver) insert(e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.entries[e.id]; dup || r.max < 0 {
		r.dropLocked(e)
		return
	}
	e.elem = r.lru.PushFront(e)
	r.entries[e.id] = e
	for len(r.entries) > r.max {
		old := r.lru.Back().Value.(*entry)
		r.lru.Remove(old.elem)
		delete(r.entries, old.id)
		r.dropLocked(old)
	}
}

// dropLocked marks e evicted and closes its fd once nobody uses it.
func (r *Resolver) dropLocked(e *entry) {
	e.evicted = true
	if e.refs == 0 && e.fd >= 0 {
		unix.Close(e.fd)
		e.fd = -1
	}
}

func (r *Resolver) release(e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.refs--
	if e.evicted {
		r.dropLocked(e)
	}
}

// Privileged reports whether c is root with CAP_SYS_ADMIN in userNS, the
// user namespace that owns the caller's container (HostUserNS() for the host
// view). The rule, strict like the kernel's own capability checks:
//
//   - c.UserNS must be userNS itself. A task in a descendant user namespace
//     (say `unshare -U -r` inside the container) is not privileged: the
//     kernel does not grant it capabilities in the parent either. Nor is a
//     task in an ancestor (host root is privileged for the host view only).
//   - c's effective uid must map to 0 inside userNS (/proc/TID/uid_map).
//   - CAP_SYS_ADMIN must be in c.CapEff (which is relative to c.UserNS).
//
// If the task exited meanwhile the error wraps ErrGone; it never answers for
// another task that reused the tid.
func (r *Resolver) Privileged(c *Caller, userNS NSID) (bool, error) {
	if c.CapEff&CapSysAdmin == 0 {
		return false, nil
	}
	return r.RootIn(c, userNS)
}

// RootIn reports whether c is in userNS itself and its effective uid maps
// to 0 there, capabilities aside (the kernel lets uid 0 read IMA's 0440
// lists by DAC alone; writing the policy needs CAP_SYS_ADMIN: Privileged).
func (r *Resolver) RootIn(c *Caller, userNS NSID) (bool, error) {
	if c.UserNS != userNS {
		return false, nil
	}
	m, err := r.uidMap(c)
	if err != nil {
		return false, fmt.Errorf("privilege of tid %d: %w", c.TID, err)
	}
	inside, ok, err := mapUp(m, c.EUID)
	if err != nil {
		return false, fmt.Errorf("privilege of tid %d: uid_map: %w", c.TID, err)
	}
	return ok && inside == 0, nil
}

// uidMap returns the uid_map of c.UserNS: from the cache, or read through
// /proc/TID (then cached with the namespace pinned).
//
// Like Owner, it relies on c's task being alive (c.UserNS held by it) when
// the answer comes from the cache.
func (r *Resolver) uidMap(c *Caller) ([]byte, error) {
	r.userMu.Lock()
	if u, ok := r.users[c.UserNS]; ok {
		r.userLRU.MoveToFront(u.elem)
		m := u.uidMap
		r.userMu.Unlock()
		return m, nil
	}
	r.userMu.Unlock()

	dir, err := openProcDir(c.TID)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	var buf [4096]byte
	m, err := readAt(dir, "uid_map", buf[:])
	if err != nil {
		return nil, err
	}
	// The map belongs to the task's user namespace; make sure that is still
	// the namespace we judge (the tid may have been reused). Maps are
	// write-once, so the map of that namespace is the one we read.
	fd, err := unix.Openat(dir, "ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, procErr(dir, "open", "ns/user", err)
	}
	now, err := fstatNS(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if now != c.UserNS {
		unix.Close(fd)
		return nil, fmt.Errorf("user namespace is now %v, not %v: %w", now, c.UserNS, ErrGone)
	}
	m = bytes.Clone(m)
	if r.max < 0 || len(bytes.TrimSpace(m)) == 0 {
		unix.Close(fd) // no cache, or a map not written yet (it may still be)
		return m, nil
	}
	r.userMu.Lock()
	defer r.userMu.Unlock()
	if _, dup := r.users[now]; dup {
		unix.Close(fd)
		return m, nil
	}
	u := &userEntry{id: now, fd: fd, uidMap: m}
	u.elem = r.userLRU.PushFront(u)
	r.users[now] = u
	for len(r.users) > r.max {
		old := r.userLRU.Back().Value.(*userEntry)
		r.userLRU.Remove(old.elem)
		delete(r.users, old.id)
		unix.Close(old.fd)
	}
	return m, nil
}
