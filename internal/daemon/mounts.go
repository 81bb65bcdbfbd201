package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	imafsfs "github.com/imafs/imafs/fs"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/mountns"
)

// mount is one served FUSE connection.
type mount struct {
	id     string
	pid    int    // process whose namespace holds the mount
	target string // mount point as resolved at mount time
	srv    imafsfs.Server
	root   *imafsfs.Root
	ended  chan struct{} // closed when the connection ended (no user left)
}

// mounts serves one FUSE connection per attached container (plus one for
// --mount), each made inside the container's mount namespace by mountns.
// A handover leaves them serving (the successor swaps each for its own);
// a shutdown unmounts them.
type mounts struct {
	log    *logrus.Logger
	quoter func() imafsfs.Quoter
	reg    *imans.Registry

	hostTarget string
	listRead   imafsfs.ListReadRule
	unobserve  func()

	mu   sync.Mutex
	byID map[string]*mount // live mounts by namespace id
	// targets is where each namespace's tree was last mounted, also once
	// its connection ended (a failed upgrade's successor may have swapped
	// it and died): a rollback mounts there again.
	targets map[string]string
	host    *mount
}

var _ imans.Observer = (*mounts)(nil)

func (ms *mounts) Name() string { return "mounts" }

// Start serves the host view (--mount), replacing a predecessor's mount.
func (ms *mounts) Start(env *Env) error {
	ms.reg = env.Reg
	ms.mu.Lock()
	if ms.byID == nil {
		ms.byID, ms.targets = map[string]*mount{}, map[string]string{}
	}
	host := ms.host
	ms.mu.Unlock()
	ms.unobserve = env.Reg.AddObserver(ms)
	target := ms.hostTarget
	if host != nil {
		target = host.target
	}
	if target == "" {
		return nil
	}
	m, err := ms.serveAt(nil, os.Getpid(), target, true)
	if err != nil {
		return fmt.Errorf("host mount: %w", err)
	}
	ms.mu.Lock()
	ms.host = m
	ms.mu.Unlock()
	return nil
}

// Stop unmounts every tree, except for a handover.
func (ms *mounts) Stop(handover bool) {
	if ms.unobserve != nil {
		ms.unobserve()
		ms.unobserve = nil
	}
	if handover {
		return
	}
	all := ms.all()
	for _, m := range all {
		ms.unmount(m)
	}
}

// Attached implements imans.Observer.
func (ms *mounts) Attached(*imans.Namespace) {}

// Detached implements imans.Observer: the mount of an exited container dies
// with its mount namespace; an explicit detach unmounted it before.
func (ms *mounts) Detached(ns *imans.Namespace) {
	ms.mu.Lock()
	delete(ms.byID, ns.ID)
	delete(ms.targets, ns.ID)
	ms.mu.Unlock()
}

// all returns the live mounts, the host's included.
func (ms *mounts) all() []*mount {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	all := make([]*mount, 0, len(ms.byID)+1)
	for _, m := range ms.byID {
		all = append(all, m)
	}
	if ms.host != nil {
		all = append(all, ms.host)
	}
	return all
}

// get returns the mount of namespace id (the host's for imans.HostID).
func (ms *mounts) get(id string) *mount {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if id == imans.HostID {
		return ms.host
	}
	return ms.byID[id]
}

func (ms *mounts) set(id string, m *mount) {
	ms.mu.Lock()
	ms.byID[id], ms.targets[id] = m, m.target
	ms.mu.Unlock()
}

// target is where namespace id's tree was last mounted ("": never, or
// detached since).
func (ms *mounts) target(id string) string {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.targets[id]
}

// take removes and returns the mount of namespace id (detach).
func (ms *mounts) take(id string) *mount {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m := ms.byID[id]
	delete(ms.byID, id)
	delete(ms.targets, id)
	return m
}

// serveAt mounts a fresh tree at target in pid's mount namespace and serves
// it. swap replaces a predecessor's mount there (start-up, rollback)
// without a gap.
func (ms *mounts) serveAt(owner *imans.Namespace, pid int, target string, swap bool) (*mount, error) {
	id := imans.HostID
	if owner != nil {
		id = owner.ID
	}
	fields := logrus.Fields{"id": id, "pid": pid, "target": target}
	mopts := mountns.Options{AllowOther: true}
	dev, err := mountns.MountFUSE(pid, target, mopts)
	if errors.Is(err, unix.ENOENT) {
		// No sysfs under the container's /sys (a bare chroot): make the
		// directories. Only then: a stale mount's stat fails with ENOTCONN,
		// which MkdirAll would turn into "file exists".
		mopts.MkdirAll = true
		dev, err = mountns.MountFUSE(pid, target, mopts)
	}
	if errors.Is(err, mountns.ErrMounted) && swap {
		// A predecessor's mount, live (upgrade) or dead (crash): mount
		// over it, then detach it. Readers never see the target empty.
		ms.log.WithFields(fields).Info("replacing a predecessor's imafs mount")
		var beneath bool
		dev, beneath, err = mountns.SwapFUSE(pid, target, mopts)
		if err == nil && !beneath {
			ms.log.WithFields(fields).Warn("swap mount: no MOVE_MOUNT_BENEATH, replaced with a short gap")
		}
	}
	if errors.Is(err, mountns.ErrMounted) {
		// The copy a nested container inherited from its parent's mount
		// namespace, or a dead one left by a crashed daemon. Replace it
		// (in this namespace only).
		ms.log.WithFields(fields).Info("replacing an inherited or stale imafs mount")
		if uerr := mountns.Unmount(pid, target, true); uerr != nil {
			return nil, fmt.Errorf("%w (and unmounting it: %v)", err, uerr)
		}
		dev, err = mountns.MountFUSE(pid, target, mopts)
	}
	if err != nil {
		return nil, err
	}
	root := imafsfs.NewRoot(imafsfs.Options{Registry: ms.reg, Log: ms.log, Owner: owner, Quoter: ms.quoter(), ListRead: ms.listRead})
	srv, err := imafsfs.Serve(dev, root)
	if err != nil {
		if uerr := mountns.Unmount(pid, target, true); uerr != nil {
			ms.log.WithError(uerr).Warn("unmount after failed serve")
		}
		return nil, err
	}
	m := &mount{id: id, pid: pid, target: target, srv: srv, root: root, ended: make(chan struct{})}
	go func() {
		srv.Wait()
		close(m.ended)
		ms.log.WithFields(fields).Info("fuse connection ended")
		ms.mu.Lock()
		if ms.byID[id] == m {
			delete(ms.byID, id)
		}
		ms.mu.Unlock()
	}()
	ms.log.WithFields(fields).Info("mounted")
	return m, nil
}

// unmount lazily unmounts m in its namespace. A container attached before
// pivot_root (OCI hook) has its tree at /sys/kernel/security by now.
func (ms *mounts) unmount(m *mount) {
	targets := []string{m.target}
	if m.target != SecurityFSTarget && strings.HasSuffix(m.target, SecurityFSTarget) {
		targets = []string{SecurityFSTarget, m.target}
	}
	var err error
	for _, t := range targets {
		if err = mountns.Unmount(m.pid, t, true); err == nil {
			ms.log.WithFields(logrus.Fields{"id": m.id, "pid": m.pid, "target": t}).Info("unmounted")
			return
		}
	}
	ms.log.WithError(err).WithField("id", m.id).Warn("unmount")
}

// handoverDrainTimeout bounds how long a daemon that handed over waits for
// the files still open on its old mounts.
const handoverDrainTimeout = 5 * time.Second

// handoverQuiet: a handed-over mount that has no open file and has seen
// no LOOKUP, OPEN or OPENDIR for this long counts as unused even if its
// connection has not ended (a copy of it in a nested container's
// namespace keeps it alive).
const handoverQuiet = time.Second

// drain waits until the connections of these mounts have ended: the
// successor detached each, and the kernel ends a detached mount's
// connection once no one uses it, no open file and no path walk in it. A
// reader that entered an old mount just before the successor slid its own
// beneath gets its open and its reads answered instead of ECONNABORTED
// when this process exits. It gives up after timeout, and treats a mount
// without open files that has been quiet for handoverQuiet as unused.
func (ms *mounts) drain(timeout time.Duration) {
	all := ms.all()
	inUse := func() (n int64) {
		for _, m := range all {
			select {
			case <-m.ended:
				continue
			default:
			}
			open := m.root.OpenHandles()
			if open > 0 || time.Since(m.root.LastOpen()) < handoverQuiet {
				n += max(open, 1)
			}
		}
		return n
	}
	deadline := time.Now().Add(timeout)
	for n := inUse(); n > 0; n = inUse() {
		if time.Now().After(deadline) {
			ms.log.WithField("in_use", n).Warn("handover: old mounts still in use; their readers get ECONNABORTED")
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// restore is the step of the start list that brings the containers back:
// on the first start those of the state directory still running
// (imans.Registry.Restore: same init process, journal replayed), after a
// failed upgrade every container that had a tree (the successor may have
// swapped it for one that died with it); each gets a
// fresh tree mounted over what a crashed or failed daemon left (ENOTCONN),
// then its vTPM.
type restore struct {
	mounts *mounts
	vtpm   *vtpmPart
}

func (r *restore) Name() string { return "restore" }
func (r *restore) Stop(bool)    {}

func (r *restore) Start(env *Env) error {
	var todo []imans.Restored
	if env.Rollback {
		for _, ns := range env.Reg.Namespaces() {
			if target := r.mounts.target(ns.ID); target != "" {
				todo = append(todo, imans.Restored{NS: ns, Record: imans.ContainerRecord{Mount: target}})
			}
		}
	} else {
		r.vtpm.deferAttach.Store(true) // after the mounts: swtpm start-ups don't lengthen the readers' gap
		todo = env.Reg.Restore()
		r.vtpm.deferAttach.Store(false)
		// Every journal is replayed: what the replays left behind goes
		// back to the OS now rather than in the scavenger's time, so the
		// daemon's RSS is what its lists keep (docs/benchmarks.md).
		debug.FreeOSMemory()
	}
	if len(todo) == 0 && !env.Rollback {
		return nil
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, restoreMountWorkers)
	for _, x := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func(x imans.Restored) {
			defer func() { <-sem; wg.Done() }()
			if r.mounts.remount(x, env.Began) {
				ok.Add(1)
			}
		}(x)
	}
	wg.Wait()
	mounted := time.Since(env.Began)
	if env.Rollback {
		r.vtpm.attachAll(env.Reg.Namespaces(), "upgrade rollback")
		return nil
	}
	nss := make([]*imans.Namespace, 0, len(todo))
	for _, x := range todo {
		nss = append(nss, x.NS)
	}
	r.vtpm.attachAll(nss, "restart")
	env.Log.WithFields(logrus.Fields{"restored": len(todo), "mounted": ok.Load(), "mounts_took": mounted.String(), "took": time.Since(env.Began).String()}).Info("restart: containers re-attached")
	return nil
}

// restoreMountWorkers bounds the mounts made at once after a restart.
const restoreMountWorkers = 8

// remount mounts a fresh tree for a restored container.
func (ms *mounts) remount(x imans.Restored, began time.Time) bool {
	ns := x.NS
	target := restoreTarget(ns.Init, x.Record.Mount)
	fields := logrus.Fields{"id": ns.ID, "pid": ns.Init, "target": target, "entries": ns.List.Len()}
	m, err := ms.serveAt(ns, ns.Init, target, true)
	if err != nil {
		// The container keeps its state (journal, vTPM) and stays
		// registered: its list is served to the host and a later
		// `imafs attach` with the same id and pid mounts again.
		ms.log.WithError(err).WithFields(fields).Error("restore: mount failed")
		return false
	}
	ms.set(ns.ID, m)
	if target != x.Record.Mount {
		if err := ms.reg.SetMount(ns.ID, target); err != nil {
			ms.log.WithError(err).WithFields(fields).Warn("restore: save mount target")
		}
	}
	fields["since_start"] = time.Since(began).String()
	ms.log.WithFields(fields).Info("re-attached after restart")
	return true
}

// restoreTarget is where a restored container's tree goes: where it was,
// except that a tree mounted under the rootfs before pivot_root (OCI hook)
// is at /sys/kernel/security once the container has pivoted.
func restoreTarget(pid int, recorded string) string {
	if recorded == "" {
		return SecurityFSTarget
	}
	if recorded != SecurityFSTarget && strings.HasSuffix(recorded, SecurityFSTarget) {
		var inRoot, hostRoot unix.Stat_t
		if unix.Stat("/proc/"+strconv.Itoa(pid)+"/root", &inRoot) == nil && unix.Stat("/", &hostRoot) == nil &&
			(inRoot.Dev != hostRoot.Dev || inRoot.Ino != hostRoot.Ino) {
			return SecurityFSTarget
		}
	}
	return recorded
}

// targetFor picks the mount point inside pid's root: an OCI hook attaches
// before pivot_root, while the init's root is still the host's and the
// container's tree lives under Rootfs.
func targetFor(pid int, rootfs, target string) (string, error) {
	if target == "" {
		target = SecurityFSTarget
	}
	if rootfs == "" {
		return target, nil
	}
	var inRoot, fsRoot unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/root", &inRoot); err != nil {
		return "", fmt.Errorf("root of pid %d: %w", pid, err)
	}
	if err := unix.Stat(rootfs, &fsRoot); err != nil {
		return "", fmt.Errorf("rootfs %s: %w", rootfs, err)
	}
	if inRoot.Dev == fsRoot.Dev && inRoot.Ino == fsRoot.Ino {
		return target, nil // pivoted already
	}
	return filepath.Join(rootfs, target), nil
}
