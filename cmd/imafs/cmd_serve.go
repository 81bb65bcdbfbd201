package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/control"
	imafsfs "github.com/imafs/imafs/fs"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/mountns"
	"github.com/imafs/imafs/policy"
	"github.com/imafs/imafs/sdnotify"
	"github.com/imafs/imafs/vtpm"
)

// The daemon serves one FUSE connection per attached container (plus one
// for --mount): mountns.MountFUSE creates each mount inside the container's
// mount namespace, at /sys/kernel/security under the container's root (under
// <rootfs> when an OCI hook runs before pivot_root), and fs.Serve answers it.
// Every connection resolves every request's caller by itself, so a process
// that reaches a container's mount from elsewhere (the host through
// /proc/PID/root, a nested container that inherited it) still gets its own
// view; separate connections keep one container's slow or stuck requests
// from delaying another's, and a container's mount dies with its mount
// namespace. Containers that share the host's pid namespace are refused at
// attach: their callers can't be told apart from the host's by pid namespace.
//
// Restarts: everything is journaled under --state-dir (imans), so a new
// daemon on the same state directory restores every container still
// running and replaces each one's mount (dead after a crash) with a fresh
// one, mounted beneath the old and the old detached (swapFUSE): the
// container needs no restart and its readers only see the time the daemon
// was away (ENOTCONN meanwhile). SIGTERM unmounts cleanly and keeps the
// state. `imafs upgrade` leaves no gap at all: this daemon freezes its
// journals, stops listening and starts its successor (the executable now at
// its path, same arguments, --takeover-fd), which restores the state and
// swaps every mount while this one still serves the old ones; this one
// exits once the successor reports ready and the files still open on its old
// mounts are closed (5 s at most), and takes everything back if the
// successor fails. A reader holding a descriptor longer gets ECONNABORTED on
// it once the old daemon exits; every new open is served.
// Under systemd (Type=notify, NotifyAccess=all: $NOTIFY_SOCKET) the daemon
// reports READY=1 once it serves and STOPPING=1 on SIGTERM; the successor
// of an upgrade, which inherits $NOTIFY_SOCKET, is a new main process: it
// is started as this daemon's sibling (CLONE_PARENT), i.e. systemd's child,
// the only kind of main process systemd supervises fully; it sends
// MAINPID=<its pid> with READY=1 and waits on a BARRIER=1 until systemd has
// read it before it tells this daemon it is ready, so systemd follows the
// successor and this daemon's exit is no longer the service's.

// SecurityFSTarget is where a container's tree is mounted.
const SecurityFSTarget = "/sys/kernel/security"

func init() {
	register(command{name: "serve", summary: "run the imafs daemon", run: runServe})
}

func runServe(args []string) int {
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	stateDir := fl.String("state-dir", "/var/lib/imafs", "directory for the daemon's state")
	socket := fl.String("socket", control.DefaultSocket, "control socket path")
	containerPolicy := fl.String("container-policy", "", "file with the policy every container starts with (kernel policy language)")
	logLevel := fl.String("log-level", "info", "log level (debug, info, warn, error)")
	logFormat := fl.String("log-format", "text", "log format (text or json)")
	hostMount := fl.String("mount", "", "also serve the tree (host view for host callers) at this host directory")
	tpmPath := fl.String("tpm", "", "host TPM (/dev/tpmrm0 or a swtpm unixio socket) for boot_aggregate; none: zeros")
	vtpmKind := fl.String("vtpm", "", "per-container virtual TPM: swtpm (one swtpm process per container) or none")
	vtpmSockets := fl.String("vtpm-socket-dir", "/run/imafs/vtpm", "directory for the vTPMs' sockets (STATE/run if empty)")
	listReadCap := fl.String("list-read-cap", "none", "capability a container's uid 0 also needs to read its lists and counters: none (the kernel's rule) or sys_admin")
	takeoverFD := fl.Int("takeover-fd", 0, "internal (imafs upgrade): take over from the daemon that started this one and report readiness on this fd")
	addServeExtensionFlags(fl)
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "imafs serve: unexpected arguments:", fl.Args())
		return 2
	}
	switch *vtpmKind {
	case "", "none", "swtpm":
	default:
		fmt.Fprintf(os.Stderr, "imafs serve: --vtpm %q: want swtpm or none\n", *vtpmKind)
		return 2
	}
	listRead, err := imafsfs.ParseListReadCap(*listReadCap)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs serve: --list-read-cap:", err)
		return 2
	}
	log := logrus.New()
	lvl, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs serve:", err)
		return 2
	}
	log.SetLevel(lvl)
	if *logFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	}
	d, err := newDaemon(daemonConfig{
		StateDir: *stateDir, Socket: *socket, ContainerPolicy: *containerPolicy, HostMount: *hostMount, TPM: *tpmPath,
		VTPM: *vtpmKind == "swtpm", VTPMSocketDir: *vtpmSockets, ListRead: listRead,
		Args: withoutFlag(args, "takeover-fd"),
	}, log)
	if err != nil {
		log.WithError(err).Error("start")
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	d.startControl()
	log.WithFields(logrus.Fields{"socket": *socket, "state_dir": *stateDir, "pid": os.Getpid()}).Info("imafs daemon ready")
	containers := len(d.reg.Namespaces())
	if *takeoverFD > 0 {
		// Under systemd this process becomes the service's main process
		// before its predecessor, the one systemd knows, may exit.
		d.sdNotify(sdnotify.MainPID(os.Getpid()), sdnotify.Ready,
			sdnotify.Status(fmt.Sprintf("serving (upgraded: took over %d containers)", containers)))
		if err := d.notifier.Barrier(notifyBarrierTimeout); err != nil {
			log.WithError(err).Warn("upgrade: systemd may not have read MAINPID= yet")
		}
		f := os.NewFile(uintptr(*takeoverFD), "takeover")
		if _, err := fmt.Fprintf(f, "ready %d\n", os.Getpid()); err != nil {
			log.WithError(err).Warn("upgrade: report readiness")
		}
		f.Close()
	} else {
		d.sdNotify(sdnotify.Ready, sdnotify.Status(fmt.Sprintf("serving (%d containers restored at start)", containers)))
	}
	for {
		select {
		case s := <-sigs:
			log.WithField("signal", s.String()).Info("shutting down")
			d.sdNotify(sdnotify.Stopping, sdnotify.Status("stopping ("+s.String()+")"))
			d.shutdown()
			return 0
		case err := <-d.ctlErr:
			if err == nil {
				// Serve ends without an error only when an upgrade
				// stopped listening: the upgrade decides. Not
				// d.upgrading: a rolled-back upgrade may have reset it
				// before this case ran, which ended the daemon.
				continue
			}
			log.WithError(err).Error("control socket failed")
			d.sdNotify(sdnotify.Stopping, sdnotify.Status(fmt.Sprintf("stopping: control socket failed: %v", err)))
			d.shutdown()
			return 1
		case <-d.handedOver:
			// The successor has swapped every mount for its own and
			// owns the state: nothing to unmount or close here. Files
			// opened on the old mounts just before the swap are still
			// served: let their readers finish first.
			d.drainOpenFiles(handoverDrainTimeout)
			log.Info("handed over to the new daemon; exiting")
			return 0
		}
	}
}

// notifyBarrierTimeout bounds how long an upgrade's successor waits for
// systemd to acknowledge its MAINPID= (BARRIER=1).
const notifyBarrierTimeout = 5 * time.Second

// sdNotify tells the service manager (systemd, $NOTIFY_SOCKET) states; a
// no-op when the daemon was not started by one.
func (d *daemon) sdNotify(states ...string) {
	if err := d.notifier.Notify(states...); err != nil {
		d.log.WithError(err).WithField("states", states).Warn("sd_notify")
	}
}

// handoverDrainTimeout bounds how long a daemon that handed over waits for
// the files still open on its old mounts.
const handoverDrainTimeout = 5 * time.Second

// drainOpenFiles waits until no file or directory of this daemon's mounts is
// open, or timeout: a reader that opened a file on a mount just before the
// successor slid its own beneath gets its reads answered instead of
// ECONNABORTED when this process exits.
func (d *daemon) drainOpenFiles(timeout time.Duration) {
	d.mu.Lock()
	roots := make([]*imafsfs.Root, 0, len(d.mounts)+1)
	for _, m := range d.mounts {
		roots = append(roots, m.root)
	}
	if d.host != nil {
		roots = append(roots, d.host.root)
	}
	d.mu.Unlock()
	open := func() (n int64) {
		for _, r := range roots {
			n += r.OpenHandles()
		}
		return n
	}
	deadline := time.Now().Add(timeout)
	for n := open(); n > 0; n = open() {
		if time.Now().After(deadline) {
			d.log.WithField("open", n).Warn("handover: files still open on the old mounts; their readers get ECONNABORTED")
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// withoutFlag returns args without the flag name (-name/--name, with its
// value as =V or as the next argument).
func withoutFlag(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		if a == name {
			i++
			continue
		}
		if strings.HasPrefix(a, name+"=") && strings.HasPrefix(args[i], "-") {
			continue
		}
		out = append(out, args[i])
	}
	return out
}

type daemonConfig struct {
	StateDir, Socket, ContainerPolicy, HostMount, TPM string
	VTPM                                              bool                 // one swtpm per container
	VTPMSocketDir                                     string               // "" → StateDir/run
	ListRead                                          imafsfs.ListReadRule // --list-read-cap
	// Args are serve's arguments, for the successor (imafs upgrade).
	Args []string
}

// mount is one served FUSE connection.
type mount struct {
	id     string
	pid    int    // process whose namespace holds the mount
	target string // mount point as resolved at mount time
	srv    *fuse.Server
	root   *imafsfs.Root
}

type daemon struct {
	log *logrus.Logger
	reg *imans.Registry
	ctl *control.Server

	cfg     daemonConfig
	hostTPM *hostTPM                     // --tpm
	vtpmMgr atomic.Pointer[vtpm.Manager] // nil without --vtpm; replaced after a failed upgrade

	// swap: replace an existing imafs mount by mounting over it and then
	// detaching it (start-up and upgrades), never unmount first.
	swap       atomic.Bool
	ctlErr     chan error    // the control server's Serve result
	upgrading  atomic.Bool   // an upgrade is handing the daemon over
	handedOver chan struct{} // closed once a successor took over

	// restoring: the vTPMs of restored containers start after their
	// mounts, so that swtpm start-ups don't lengthen the readers' gap.
	restoring atomic.Bool

	mu     sync.Mutex
	mounts map[string]*mount // by namespace id
	host   *mount

	stops []func() // of the started serve extensions

	notifier sdnotify.Notifier // $NOTIFY_SOCKET (systemd Type=notify); no-op without it
}

func newDaemon(cfg daemonConfig, log *logrus.Logger) (*daemon, error) {
	var def policy.Policy
	if cfg.ContainerPolicy != "" {
		text, err := os.ReadFile(cfg.ContainerPolicy)
		if err != nil {
			return nil, fmt.Errorf("container policy: %w", err)
		}
		rules, err := policy.Parse(string(text))
		if err != nil {
			return nil, fmt.Errorf("container policy %s: %w", cfg.ContainerPolicy, err)
		}
		def = rules
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	opts := imans.Options{
		DefaultContainerPolicy: def,
		StateDir:               cfg.StateDir,
		Log:                    log,
	}
	ht := &hostTPM{path: cfg.TPM}
	if cfg.TPM != "" {
		if err := ht.open(); err != nil {
			return nil, err
		}
		// boot_aggregate is computed at each attach from the PCRs as they
		// are then (they don't change after boot on a real host).
		opts.BootAggregate = ht.bootAggregate
	}
	configureRegistry(&opts)
	start := time.Now()
	reg, err := imans.NewRegistry(opts)
	if err != nil {
		return nil, err
	}
	d := &daemon{log: log, reg: reg, cfg: cfg, mounts: map[string]*mount{}, ctlErr: make(chan error, 1), handedOver: make(chan struct{}), notifier: sdnotify.FromEnv()}
	// Mounts left by a predecessor (dead after a crash, live during an
	// upgrade) are replaced without a gap while starting.
	d.swap.Store(true)
	defer d.swap.Store(false)
	d.hostTPM = ht
	if cfg.VTPM {
		m, err := newVTPMManager(cfg, ht.get(), log)
		if err != nil {
			reg.Close()
			return nil, err
		}
		d.vtpmMgr.Store(m)
	}
	reg.AddObserver(d)
	if cfg.HostMount != "" {
		m, err := d.serveAt(nil, os.Getpid(), cfg.HostMount)
		if err != nil {
			reg.Close()
			return nil, fmt.Errorf("host mount: %w", err)
		}
		d.host = m
	}
	restored := make(chan struct{})
	stops, err := startServeExtensions(serveEnv{Reg: reg, Log: log, StateDir: cfg.StateDir, Restored: restored, HandingOver: d.upgrading.Load})
	if err != nil {
		d.shutdownMounts()
		d.closeVTPM()
		reg.Close()
		return nil, err
	}
	d.stops = stops
	// Containers attached before a restart come back before the socket
	// accepts requests (the measurement sources watch them already).
	d.restore(start)
	close(restored)
	ctl, err := control.Listen(cfg.Socket, control.HandlerFunc(d.serveControl), log)
	if err != nil {
		stopServeExtensions(d.stops)
		d.shutdownMounts()
		d.closeVTPM()
		reg.Close()
		return nil, err
	}
	d.ctl = ctl
	return d, nil
}

// serveAt mounts a fresh tree at target in pid's mount namespace and serves it.
func (d *daemon) serveAt(owner *imans.Namespace, pid int, target string) (*mount, error) {
	id := imans.HostID
	if owner != nil {
		id = owner.ID
	}
	mopts := mountns.Options{AllowOther: true}
	dev, err := mountns.MountFUSE(pid, target, mopts)
	if errors.Is(err, unix.ENOENT) {
		// No sysfs under the container's /sys (a bare chroot): make the
		// directories. Only then: a stale mount's stat fails with ENOTCONN,
		// which MkdirAll would turn into "file exists".
		mopts.MkdirAll = true
		dev, err = mountns.MountFUSE(pid, target, mopts)
	}
	if errors.Is(err, mountns.ErrMounted) && d.swap.Load() {
		// A predecessor's mount, live (upgrade) or dead (crash): mount
		// over it, then detach it. Readers never see the target empty.
		d.log.WithFields(logrus.Fields{"id": id, "pid": pid, "target": target}).Info("replacing a predecessor's imafs mount")
		dev, err = swapFUSE(pid, target, d.log)
	}
	if errors.Is(err, mountns.ErrMounted) {
		// An imafs mount is there already: the copy a nested container
		// inherited from its parent's mount namespace, or a dead one left
		// by a crashed daemon. Replace it (in this namespace only).
		d.log.WithFields(logrus.Fields{"id": id, "pid": pid, "target": target}).Info("replacing an inherited or stale imafs mount")
		if uerr := mountns.Unmount(pid, target, true); uerr != nil {
			return nil, fmt.Errorf("%w (and unmounting it: %v)", err, uerr)
		}
		dev, err = mountns.MountFUSE(pid, target, mopts)
	}
	if err != nil {
		return nil, err
	}
	root := imafsfs.NewRoot(imafsfs.Options{Registry: d.reg, Log: d.log, Owner: owner, Quoter: d.quoter(), ListRead: d.cfg.ListRead})
	srv, err := imafsfs.Serve(dev, root)
	if err != nil {
		if uerr := mountns.Unmount(pid, target, true); uerr != nil {
			d.log.WithError(uerr).Warn("unmount after failed serve")
		}
		return nil, err
	}
	m := &mount{id: id, pid: pid, target: target, srv: srv, root: root}
	go func() {
		srv.Wait()
		d.log.WithFields(logrus.Fields{"id": id, "pid": pid, "target": target}).Info("fuse connection ended")
		d.mu.Lock()
		if d.mounts[id] == m {
			delete(d.mounts, id)
		}
		d.mu.Unlock()
	}()
	d.log.WithFields(logrus.Fields{"id": id, "pid": pid, "target": target}).Info("mounted")
	return m, nil
}

// unmount lazily unmounts m in its namespace. A container attached before
// pivot_root (OCI hook) has its tree at /sys/kernel/security by now.
func (d *daemon) unmount(m *mount) {
	targets := []string{m.target}
	if m.target != SecurityFSTarget && strings.HasSuffix(m.target, SecurityFSTarget) {
		targets = []string{SecurityFSTarget, m.target}
	}
	var err error
	for _, t := range targets {
		if err = mountns.Unmount(m.pid, t, true); err == nil {
			d.log.WithFields(logrus.Fields{"id": m.id, "pid": m.pid, "target": t}).Info("unmounted")
			return
		}
	}
	d.log.WithError(err).WithField("id", m.id).Warn("unmount")
}

// Attached implements imans.Observer: with --vtpm the container gets its
// swtpm, which replays the list (a restored container's whole journal) and
// then follows it.
func (d *daemon) Attached(ns *imans.Namespace) {
	if d.vtpmManager() == nil || d.restoring.Load() {
		return
	}
	if err := d.vtpmManager().Attach(ns.ID, ns.List); err != nil {
		d.log.WithError(err).WithField("id", ns.ID).Error("vtpm attach: the container has no quotes")
	}
}

// Detached implements imans.Observer: the mount of an exited container dies
// with its mount namespace; an explicit detach unmounted it before. Its
// vTPM is stopped and its state removed.
func (d *daemon) Detached(ns *imans.Namespace) {
	d.mu.Lock()
	delete(d.mounts, ns.ID)
	d.mu.Unlock()
	if d.vtpmManager() != nil {
		if err := d.vtpmManager().Detach(ns.ID); err != nil {
			d.log.WithError(err).WithField("id", ns.ID).Warn("vtpm detach")
		}
	}
}

func (d *daemon) shutdownMounts() {
	d.mu.Lock()
	ms := make([]*mount, 0, len(d.mounts))
	for _, m := range d.mounts {
		ms = append(ms, m)
	}
	host := d.host
	d.mu.Unlock()
	for _, m := range ms {
		d.unmount(m)
	}
	if host != nil {
		d.unmount(host)
	}
}

func (d *daemon) shutdown() {
	if d.ctl != nil {
		d.ctl.Close()
	}
	stopServeExtensions(d.stops)
	d.shutdownMounts()
	d.closeVTPM()
	// Close keeps every container's state: the next daemon on this state
	// directory re-attaches the containers still running.
	if err := d.reg.Close(); err != nil {
		d.log.WithError(err).Warn("close registry")
	}
	d.log.Info("imafs daemon stopped")
}

func (d *daemon) serveControl(ctx context.Context, req *control.Request, rw *control.ReplyWriter) {
	var err error
	switch req.Op {
	case control.OpPing:
		err = rw.Reply(&control.Response{})
	case control.OpAttach:
		var info *control.NamespaceInfo
		if info, err = d.attach(req); err == nil {
			err = rw.Reply(&control.Response{Namespace: info})
		}
	case control.OpDetach:
		if err = d.detach(req.ID); err == nil {
			err = rw.Reply(&control.Response{})
		}
	case control.OpPs:
		resp := &control.Response{Namespaces: []control.NamespaceInfo{}}
		for _, ns := range append([]*imans.Namespace{d.reg.Host()}, d.reg.Namespaces()...) {
			resp.Namespaces = append(resp.Namespaces, d.info(ns))
		}
		err = rw.Reply(resp)
	case control.OpLog:
		err = d.streamLog(ctx, req, rw)
	case control.OpPolicyGet:
		var ns *imans.Namespace
		if ns, err = d.namespace(req.ID); err == nil {
			text := ns.PolicyText()
			err = rw.Reply(&control.Response{Policy: text, PolicyBytes: []byte(text)})
		}
	case control.OpPolicySet:
		err = d.setPolicy(req)
		if err == nil {
			err = rw.Reply(&control.Response{})
		}
	case control.OpMeasure:
		var measured bool
		if measured, err = d.measure(req); err == nil {
			err = rw.Reply(&control.Response{Measured: measured})
		}
	case control.OpUpgrade:
		err = d.upgrade(rw)
	case control.OpQuote:
		var bundle *vtpm.Bundle
		if bundle, err = d.quote(req); err == nil {
			err = rw.Reply(&control.Response{Bundle: bundle})
		}
	default:
		err = fmt.Errorf("unknown operation %q", req.Op)
	}
	if err != nil {
		entry := d.log.WithError(err).WithFields(logrus.Fields{"op": req.Op, "id": req.ID})
		if req.Op == control.OpDetach && errors.Is(err, imans.ErrNotFound) {
			// A poststop hook after the container detached itself (its
			// init exited first): the expected order, not a fault.
			entry.Debug("detach: not registered (already detached)")
		} else {
			entry.Warn("control request failed")
		}
		rw.Fail(err)
	}
}

func (d *daemon) namespace(id string) (*imans.Namespace, error) {
	if id == "" {
		return nil, errors.New("no namespace id")
	}
	ns, ok := d.reg.Get(id)
	if !ok {
		return nil, fmt.Errorf("namespace %s: %w", id, imans.ErrNotFound)
	}
	return ns, nil
}

func (d *daemon) info(ns *imans.Namespace) control.NamespaceInfo {
	info := control.NamespaceInfo{
		ID:          ns.ID,
		Pid:         ns.Init,
		Entries:     ns.List.Len(),
		Violations:  ns.List.Violations(),
		Rules:       len(ns.Policy()),
		PCR10SHA1:   hex.EncodeToString(ns.List.PCR(measurelog.SHA1, imans.DefaultPCR)),
		PCR10SHA256: hex.EncodeToString(ns.List.PCR(measurelog.SHA256, imans.DefaultPCR)),
		Degraded:    d.reg.Degraded(ns),
	}
	if ns.IsHost() {
		info.Namespace = fmt.Sprintf("pid:[%d]", d.reg.Resolver().HostPidNS().Ino)
	} else {
		info.Namespace = fmt.Sprintf("pid:[%d]", ns.Pinned.PidNS.Ino)
	}
	d.mu.Lock()
	m := d.mounts[ns.ID]
	if ns.IsHost() {
		m = d.host
	}
	d.mu.Unlock()
	if m != nil {
		info.Mount = m.target
	}
	return info
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

func (d *daemon) attach(req *control.Request) (*control.NamespaceInfo, error) {
	id := req.ID
	if id == "" {
		id = "pid" + strconv.Itoa(req.Pid)
	}
	if ns, ok := d.reg.Get(id); ok && !ns.IsHost() {
		if ns.Init == req.Pid {
			// createRuntime and prestart hooks both configured: one attach.
			// A container restored after a restart whose mount failed then
			// gets its mount now.
			d.mu.Lock()
			m := d.mounts[id]
			d.mu.Unlock()
			if m == nil {
				target, err := targetFor(req.Pid, req.Rootfs, req.Target)
				if err != nil {
					return nil, fmt.Errorf("attach %s: %w", id, err)
				}
				if m, err = d.serveAt(ns, req.Pid, target); err != nil {
					return nil, fmt.Errorf("attach %s: %w", id, err)
				}
				d.mu.Lock()
				d.mounts[id] = m
				d.mu.Unlock()
				if err := d.reg.SetMount(id, target); err != nil {
					d.log.WithError(err).WithField("id", id).Warn("mount target not saved")
				}
			}
			info := d.info(ns)
			return &info, nil
		}
		return nil, fmt.Errorf("attach %s: %w", id, imans.ErrExists)
	}
	target, err := targetFor(req.Pid, req.Rootfs, req.Target)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", id, err)
	}
	ns, err := d.reg.Attach(id, req.Pid, req.OCIConfig)
	if err != nil {
		return nil, err
	}
	m, err := d.serveAt(ns, req.Pid, target)
	if err == nil && !ns.Pinned.Alive() {
		// The init exited while we mounted: its pid may now name another
		// process, whose namespace got our mount. (While the pinned init
		// lives, its pid can't be reused, so a live init after the mount
		// means the mount went where it should.)
		d.unmount(m)
		err = fmt.Errorf("container init %d exited during attach", req.Pid)
	}
	if err != nil {
		if derr := d.reg.Detach(id); derr != nil {
			d.log.WithError(derr).Warn("detach after failed mount")
		}
		return nil, fmt.Errorf("attach %s: %w", id, err)
	}
	d.mu.Lock()
	d.mounts[id] = m
	d.mu.Unlock()
	if err := d.reg.SetMount(id, target); err != nil {
		d.log.WithError(err).WithField("id", id).Warn("mount target not saved: a restarted daemon will use " + SecurityFSTarget)
	}
	info := d.info(ns)
	return &info, nil
}

func (d *daemon) detach(id string) error {
	ns, err := d.namespace(id)
	if err != nil {
		return err
	}
	if ns.IsHost() {
		return errors.New("the host namespace can't be detached")
	}
	d.mu.Lock()
	m := d.mounts[id]
	delete(d.mounts, id)
	d.mu.Unlock()
	if m != nil && ns.Pinned.Alive() {
		d.unmount(m)
	}
	return d.reg.Detach(id)
}

func (d *daemon) setPolicy(req *control.Request) error {
	ns, err := d.namespace(req.ID)
	if err != nil {
		return err
	}
	text := req.Policy
	if req.PolicyBytes != nil {
		text = string(req.PolicyBytes)
	}
	rules, err := policy.Parse(text)
	if err != nil {
		return fmt.Errorf("policy for %s: %w", ns.ID, err)
	}
	if err := ns.LoadPolicy(rules); err != nil {
		return fmt.Errorf("policy for %s: %w", ns.ID, err)
	}
	d.log.WithFields(logrus.Fields{"id": ns.ID, "rules": len(rules)}).Info("policy loaded by host admin")
	return nil
}

var funcNames = map[string]policy.Func{
	"BPRM_CHECK": policy.BPRMCheck, "MMAP_CHECK": policy.MMAPCheck, "FILE_MMAP": policy.MMAPCheck,
	"MMAP_CHECK_REQPROT": policy.MMAPCheckReqprot, "CREDS_CHECK": policy.CredsCheck,
	"FILE_CHECK": policy.FileCheck, "PATH_CHECK": policy.FileCheck, "MODULE_CHECK": policy.ModuleCheck,
	"FIRMWARE_CHECK": policy.FirmwareCheck, "POLICY_CHECK": policy.PolicyCheck,
}

var maskNames = map[string]policy.Mask{
	"MAY_EXEC": policy.MayExec, "MAY_WRITE": policy.MayWrite, "MAY_READ": policy.MayRead, "MAY_APPEND": policy.MayAppend,
}

func (d *daemon) measure(req *control.Request) (bool, error) {
	ns, err := d.namespace(req.ID)
	if err != nil {
		return false, err
	}
	if !filepath.IsAbs(req.Path) {
		return false, fmt.Errorf("measure: path %q is not absolute", req.Path)
	}
	fn, mask := policy.FileCheck, policy.MayRead
	if req.Func != "" {
		f, ok := funcNames[req.Func]
		if !ok {
			return false, fmt.Errorf("measure: unknown func %q", req.Func)
		}
		fn = f
	}
	if req.Mask != "" {
		m, ok := maskNames[req.Mask]
		if !ok {
			return false, fmt.Errorf("measure: unknown mask %q", req.Mask)
		}
		mask = m
	}
	// O_NONBLOCK: opening a FIFO must not block the handler (and with it
	// the daemon's shutdown, which waits for handlers); it is refused
	// below as not a regular file.
	f, err := os.OpenFile(req.Path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return false, fmt.Errorf("measure: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return false, fmt.Errorf("measure %s: not a regular file", req.Path)
	}
	ev, err := imans.EventFor(f, fn, mask, 0, 0)
	if err != nil {
		return false, err
	}
	name := req.Name
	if name == "" {
		name = req.Path
	}
	dec, err := d.reg.MeasureFile(ns, ev, f, name)
	if err != nil {
		return false, err
	}
	return dec.Actions&policy.Measure != 0, nil
}

func (d *daemon) streamLog(ctx context.Context, req *control.Request, rw *control.ReplyWriter) error {
	ns, err := d.namespace(req.ID)
	if err != nil {
		return err
	}
	format := measurelog.ASCII
	switch req.Format {
	case "", "ascii":
	case "binary":
		format = measurelog.Binary
	default:
		return fmt.Errorf("log: unknown format %q (ascii or binary)", req.Format)
	}
	bank := measurelog.SHA1
	if req.Bank != "" {
		if bank, err = measurelog.ParseAlgo(req.Bank); err != nil {
			return fmt.Errorf("log: %w", err)
		}
	}
	if err := rw.Reply(&control.Response{Stream: true}); err != nil {
		return nil
	}
	buf := make([]byte, 64<<10)
	var off int64
	for {
		seen := ns.List.Len()
		for {
			n, err := ns.List.ReadAt(buf, off, format, bank)
			if n > 0 {
				if _, werr := rw.Write(buf[:n]); werr != nil {
					return nil
				}
				off += int64(n)
			}
			if err != nil || n == 0 {
				break
			}
		}
		if err := rw.Flush(); err != nil || !req.Follow {
			return nil
		}
		if err := ns.List.Wait(ctx, seen); err != nil {
			return nil
		}
	}
}

// restore re-attaches the containers of the state directory still running
// (imans.Registry.Restore: same init process, journal replayed) and mounts
// a fresh tree in each, replacing the dead mount a crashed daemon left
// (ENOTCONN): new opens work again without the container's help. Each
// re-attach is logged with the time since this daemon started; the gap a
// container saw is that plus the time the daemon was down.
func (d *daemon) restore(start time.Time) {
	d.restoring.Store(true)
	restored := d.reg.Restore()
	d.restoring.Store(false)
	if len(restored) == 0 {
		return
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, restoreMountWorkers)
	for _, x := range restored {
		wg.Add(1)
		sem <- struct{}{}
		go func(x imans.Restored) {
			defer func() { <-sem; wg.Done() }()
			if d.remount(x, start) {
				ok.Add(1)
			}
		}(x)
	}
	wg.Wait()
	mounted := time.Since(start)
	if d.vtpmManager() != nil {
		for _, x := range restored {
			if x.NS.IsDetached() {
				continue
			}
			if err := d.vtpmManager().Attach(x.NS.ID, x.NS.List); err != nil {
				d.log.WithError(err).WithField("id", x.NS.ID).Error("vtpm attach after restart: the container has no quotes")
			}
		}
	}
	d.log.WithFields(logrus.Fields{"restored": len(restored), "mounted": ok.Load(), "mounts_took": mounted.String(), "took": time.Since(start).String()}).Info("restart: containers re-attached")
}

// restoreMountWorkers bounds the mounts made at once after a restart.
const restoreMountWorkers = 8

// remount mounts a fresh tree for a restored container.
func (d *daemon) remount(x imans.Restored, start time.Time) bool {
	ns := x.NS
	target := restoreTarget(ns.Init, x.Record.Mount)
	fields := logrus.Fields{"id": ns.ID, "pid": ns.Init, "target": target, "entries": ns.List.Len()}
	m, err := d.serveAt(ns, ns.Init, target)
	if err != nil {
		// The container keeps its state (journal, vTPM) and stays
		// registered: its list is served to the host and a later
		// `imafs attach` with the same id and pid mounts again.
		d.log.WithError(err).WithFields(fields).Error("restore: mount failed")
		return false
	}
	d.mu.Lock()
	d.mounts[ns.ID] = m
	d.mu.Unlock()
	if target != x.Record.Mount {
		if err := d.reg.SetMount(ns.ID, target); err != nil {
			d.log.WithError(err).WithFields(fields).Warn("restore: save mount target")
		}
	}
	fields["since_start"] = time.Since(start).String()
	d.log.WithFields(fields).Info("re-attached after restart")
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

// newVTPMManager starts the per-container vTPM bookkeeping (--vtpm swtpm):
// swtpm state under STATE/vtpm (kept across restarts: the attestation key
// survives), sockets under --vtpm-socket-dir.
func newVTPMManager(cfg daemonConfig, hostTPM *vtpm.TPM, log *logrus.Logger) (*vtpm.Manager, error) {
	sockets := cfg.VTPMSocketDir
	if sockets == "" {
		sockets = filepath.Join(cfg.StateDir, "run")
	}
	if err := os.MkdirAll(sockets, 0o700); err != nil {
		return nil, fmt.Errorf("vtpm socket dir: %w", err)
	}
	opts := vtpm.ManagerOptions{StateDir: filepath.Join(cfg.StateDir, "vtpm"), SocketDir: sockets, Log: log}
	if hostTPM != nil {
		h, err := vtpm.NewHostAttester(hostTPM)
		if err != nil {
			return nil, fmt.Errorf("host attestation key: %w", err)
		}
		opts.Host = h
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("vtpm state dir: %w", err)
	}
	m, err := vtpm.NewManager(opts)
	if err != nil {
		return nil, err
	}
	log.WithFields(logrus.Fields{"state": opts.StateDir, "sockets": sockets, "host_bound": opts.Host != nil}).Info("vtpm: one swtpm per container")
	return m, nil
}

// vtpmManager returns the vTPM manager (nil without --vtpm).
func (d *daemon) vtpmManager() *vtpm.Manager { return d.vtpmMgr.Load() }

// hostTPM is the --tpm connection, closed for a handover (a swtpm socket
// serves one client) and opened again if the handover fails.
type hostTPM struct {
	path string
	mu   sync.Mutex
	t    *vtpm.TPM
}

func (h *hostTPM) open() error {
	t, err := vtpm.OpenHost(h.path)
	if err != nil {
		return fmt.Errorf("host tpm: %w", err)
	}
	h.mu.Lock()
	h.t = t
	h.mu.Unlock()
	return nil
}

func (h *hostTPM) get() *vtpm.TPM {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.t
}

func (h *hostTPM) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.t != nil {
		h.t.Close()
		h.t = nil
	}
}

func (h *hostTPM) bootAggregate(algo measurelog.Algo) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.t == nil {
		return nil, errors.New("host tpm closed (handed over)")
	}
	return vtpm.BootAggregate(h.t, algo)
}

func (d *daemon) closeVTPM() {
	if d.vtpmManager() == nil {
		return
	}
	if err := d.vtpmManager().Close(); err != nil {
		d.log.WithError(err).Warn("vtpm close")
	}
}

// quote answers the control request quote: the container's vTPM bundle.
func (d *daemon) quote(req *control.Request) (*vtpm.Bundle, error) {
	ns, err := d.namespace(req.ID)
	if err != nil {
		return nil, err
	}
	if d.vtpmManager() == nil {
		return nil, errors.New("quote: the daemon runs without --vtpm")
	}
	if ns.IsHost() {
		return nil, errors.New("quote: the host has no vTPM (its TPM is the machine's)")
	}
	nonce, err := parseNonce(req.Nonce)
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	b, err := d.vtpmManager().Quote(ns.ID, nonce)
	if err != nil {
		return nil, fmt.Errorf("quote %s: %w", ns.ID, err)
	}
	return b, nil
}

// quoter serves integrity/ima/quote (nil without --vtpm: ENODEV).
func (d *daemon) quoter() imafsfs.Quoter {
	if d.vtpmManager() == nil {
		return nil
	}
	return func(ns *imans.Namespace, nonce []byte) ([]byte, error) {
		if ns.IsHost() {
			return nil, imafsfs.ErrNoVTPM
		}
		b, err := d.vtpmManager().Quote(ns.ID, nonce)
		if errors.Is(err, vtpm.ErrUnknownNamespace) {
			return nil, fmt.Errorf("%w: %v", imafsfs.ErrNoVTPM, err)
		}
		if err != nil {
			return nil, err
		}
		return b.Marshal()
	}
}

// startControl serves the control socket; Serve's result goes to d.ctlErr.
func (d *daemon) startControl() {
	ctl := d.ctl
	go func() { d.ctlErr <- ctl.Serve() }()
}

// moveMountBeneath is MOVE_MOUNT_BENEATH (Linux 6.5): mount beneath the
// top mount at the target path.
const moveMountBeneath = 0x200

// swapFUSE replaces the imafs mount at target in pid's mount namespace (a
// predecessor's: live during an upgrade, dead after a crash) with a fresh
// FUSE connection, without a moment where target has no imafs mount: the
// new mount is made with fsopen/fsmount, slid beneath the old one
// (move_mount MOVE_MOUNT_BENEATH), and the old one is then detached
// (MNT_DETACH: descriptors opened on it keep working while their server
// lives). On a kernel without MOVE_MOUNT_BENEATH the old mount is detached
// first (a window of two system calls).
func swapFUSE(pid int, target string, log *logrus.Logger) (*os.File, error) {
	fail := func(err error) (*os.File, error) {
		return nil, fmt.Errorf("swap mount %s in mount ns of pid %d: %w", target, pid, err)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("open /dev/fuse: %w", err))
	}
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	mfd, err := fuseMountFD(fd)
	if err != nil {
		dev.Close()
		return fail(err)
	}
	defer unix.Close(mfd)
	beneath := true
	err = mountns.InNamespace(pid, func(int) error {
		err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH|moveMountBeneath)
		if err != nil {
			beneath = false
			if uerr := unix.Unmount(target, unix.MNT_DETACH); uerr != nil {
				return fmt.Errorf("move_mount beneath: %w; unmount: %v", err, uerr)
			}
			if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("move_mount: %w", err)
			}
			return nil
		}
		// The old mount is on top now: detach it (no request reaches its
		// server, dead or alive).
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach the replaced mount: %w", err)
		}
		return nil
	})
	if err != nil {
		dev.Close()
		return fail(err)
	}
	if !beneath {
		log.WithFields(logrus.Fields{"pid": pid, "target": target}).Warn("swap mount: no MOVE_MOUNT_BENEATH, replaced with a short gap")
	}
	return dev, nil
}

// fuseMountFD makes a detached imafs FUSE mount over /dev/fuse fd with the
// options mountns.MountFUSE uses.
func fuseMountFD(fd int) (int, error) {
	fsfd, err := unix.Fsopen("fuse", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen fuse: %w", err)
	}
	defer unix.Close(fsfd)
	for _, kv := range [][2]string{{"source", "imafs"}, {"subtype", "imafs"}, {"fd", strconv.Itoa(fd)}, {"rootmode", "40000"}, {"user_id", "0"}, {"group_id", "0"}} {
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
			return -1, fmt.Errorf("fsconfig %s=%s: %w", kv[0], kv[1], err)
		}
	}
	if err := unix.FsconfigSetFlag(fsfd, "allow_other"); err != nil {
		return -1, fmt.Errorf("fsconfig allow_other: %w", err)
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("fsconfig create: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsmount: %w", err)
	}
	return mfd, nil
}

// upgradeTimeout bounds how long a successor may take to be ready.
const upgradeTimeout = 60 * time.Second

// upgrade hands the daemon over to a new process running the executable
// now at this daemon's path (imafs upgrade) with the same arguments. Reads
// see no gap: this daemon keeps serving its mounts (frozen, read-only)
// until the successor has mounted over each one (swapFUSE) and listens on
// the control socket. Measurement pauses for the handover: the
// measurement sources stop first (fanotify: the engine answers what it
// has read and leaves its groups to the keeper, where new events wait for
// the successor) and Records fail with imans.ErrFrozen until the successor
// owns the journals. If the successor fails, this daemon
// takes everything back and goes on.
func (d *daemon) upgrade(rw *control.ReplyWriter) error {
	if !d.upgrading.CompareAndSwap(false, true) {
		return errors.New("upgrade: already in progress")
	}
	exe, err := os.Executable()
	if err != nil {
		d.upgrading.Store(false)
		return fmt.Errorf("upgrade: own executable: %w", err)
	}
	begin := time.Now()
	d.log.WithField("executable", exe).Info("upgrade: handing over")
	d.sdNotify(sdnotify.Status("upgrading: handing over to a successor"))
	stopServeExtensions(d.stops)
	d.stops = nil
	d.closeVTPM()
	d.hostTPM.close() // a swtpm socket serves one connection: the successor's
	d.reg.Freeze()
	if err := d.ctl.StopListening(); err != nil {
		d.log.WithError(err).Warn("upgrade: stop listening")
	}
	pid, err := d.spawnSuccessor(exe)
	if err != nil {
		d.log.WithError(err).Error("upgrade failed; this daemon goes on")
		d.resume()
		d.upgrading.Store(false)
		d.sdNotify(sdnotify.MainPID(os.Getpid()), sdnotify.Ready, sdnotify.Status(fmt.Sprintf("serving (upgrade failed: %v)", err)))
		return fmt.Errorf("upgrade: %w", err)
	}
	d.log.WithFields(logrus.Fields{"successor": pid, "took": time.Since(begin).String()}).Info("upgrade: the successor took over")
	if err := rw.Reply(&control.Response{Pid: pid}); err == nil {
		rw.Flush()
	}
	close(d.handedOver)
	return nil
}

// spawnSuccessor starts exe as `serve ARGS --takeover-fd 3` in its own
// session and waits until it reports that it is ready.
func (d *daemon) spawnSuccessor(exe string) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	args := append(append([]string{"serve"}, d.cfg.Args...), "--takeover-fd", "3")
	command := func(cloneFlags uintptr) *exec.Cmd {
		cmd := exec.Command(exe, args...)
		// The successor inherits this environment, $NOTIFY_SOCKET
		// included: it notifies the same service manager.
		cmd.Env = os.Environ()
		cmd.ExtraFiles = []*os.File{w}
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: cloneFlags}
		return cmd
	}
	// Under a service manager the successor is started as this daemon's
	// sibling (CLONE_PARENT): systemd supervises fully only a main process
	// that is its own child when it learns of it (MAINPID=); for one that
	// is not (our child, even once reparented to it) it does not wait
	// after SIGTERM (KillMode=mixed: SIGKILL at once). A pid namespace's
	// init cannot clone a sibling (EINVAL): then it stays our child.
	cmd := command(0)
	if d.notifier.Enabled() {
		cmd = command(unix.CLONE_PARENT)
	}
	err = cmd.Start()
	if err != nil && d.notifier.Enabled() && errors.Is(err, unix.EINVAL) {
		d.log.WithError(err).Warn("upgrade: cannot start the successor as a sibling; systemd will see a main process it did not start")
		cmd = command(0)
		err = cmd.Start()
	}
	if err != nil {
		w.Close()
		return 0, fmt.Errorf("start %s: %w", exe, err)
	}
	w.Close()
	if err := waitReady(r, "successor", cmd.Process.Pid, upgradeTimeout); err != nil {
		// A successor that failed after its MAINPID= would take the
		// service down with it: this daemon is the main process again.
		d.sdNotify(sdnotify.MainPID(os.Getpid()))
		cmd.Process.Kill()
		cmd.Wait() // ECHILD for a sibling: the service manager reaps it
		return 0, err
	}
	pid := cmd.Process.Pid
	cmd.Process.Release() // it outlives this daemon
	return pid, nil
}

// resume takes everything back after a failed upgrade: journals, control
// socket, measurement sources, vTPMs, and fresh mounts over whatever the
// failed successor left.
func (d *daemon) resume() {
	if err := d.reg.Thaw(); err != nil {
		d.log.WithError(err).Error("upgrade rollback: journals")
	}
	ctl, err := control.Listen(d.cfg.Socket, control.HandlerFunc(d.serveControl), d.log)
	if err != nil {
		d.log.WithError(err).Error("upgrade rollback: control socket")
	} else {
		d.ctl = ctl
		d.startControl()
	}
	d.swap.Store(true)
	defer d.swap.Store(false)
	for _, ns := range d.reg.Namespaces() {
		d.mu.Lock()
		old := d.mounts[ns.ID]
		d.mu.Unlock()
		if old == nil {
			continue
		}
		m, err := d.serveAt(ns, ns.Init, restoreTarget(ns.Init, old.target))
		if err != nil {
			d.log.WithError(err).WithField("id", ns.ID).Error("upgrade rollback: mount")
			continue
		}
		d.mu.Lock()
		d.mounts[ns.ID] = m
		d.mu.Unlock()
	}
	d.mu.Lock()
	host := d.host
	d.mu.Unlock()
	if host != nil {
		if m, err := d.serveAt(nil, os.Getpid(), host.target); err == nil {
			d.mu.Lock()
			d.host = m
			d.mu.Unlock()
		}
	}
	stops, err := startServeExtensions(serveEnv{Reg: d.reg, Log: d.log, StateDir: d.cfg.StateDir, HandingOver: d.upgrading.Load})
	if err != nil {
		d.log.WithError(err).Error("upgrade rollback: measurement sources")
	}
	d.stops = stops
	if d.cfg.TPM != "" {
		if err := d.hostTPM.open(); err != nil {
			d.log.WithError(err).Error("upgrade rollback: host TPM")
		}
	}
	if d.vtpmManager() != nil {
		// The old manager's host attester used the closed host TPM.
		if m, err := newVTPMManager(d.cfg, d.hostTPM.get(), d.log); err != nil {
			d.log.WithError(err).Error("upgrade rollback: vtpm")
		} else {
			d.vtpmMgr.Store(m)
		}
		for _, ns := range d.reg.Namespaces() {
			if err := d.vtpmManager().Attach(ns.ID, ns.List); err != nil {
				d.log.WithError(err).WithField("id", ns.ID).Error("upgrade rollback: vtpm")
			}
		}
	}
}
