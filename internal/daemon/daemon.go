package daemon

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/sdnotify"
)

// A Component is one part of the daemon. Start brings it up (again, after
// a failed upgrade: env.Rollback); Stop takes it down, leaving in place
// what a successor takes over when handover is set.
type Component interface {
	Name() string
	Start(env *Env) error
	Stop(handover bool)
}

// Env is what the components of one start pass share.
type Env struct {
	Log *logrus.Logger
	// Reg is the registry, set once the registry component started.
	Reg *imans.Registry
	// Began is when the pass began (restores log the time since).
	Began time.Time
	// Rollback: the pass after a failed upgrade (RollbackErr says why);
	// the registry thaws instead of restoring.
	Rollback    bool
	RollbackErr error
	// Restored is closed once the containers of a previous daemon are back
	// in the registry (sources start before, so that they watch them as
	// they come back; a source attributing a backlog waits for it).
	Restored <-chan struct{}
}

// Daemon is `imafs serve`: an ordered list of components.
type Daemon struct {
	cfg Config
	log *logrus.Logger

	list    []Component // in start order; stopped in reverse
	started int         // how many of list run (under mu)
	mu      sync.Mutex  // serialises start and stop passes

	reg      *registry
	mounts   *mounts
	control  *control
	upgrade  *upgrade
	notifier sdnotify.Notifier // $NOTIFY_SOCKET; no-op without it

	closeOnce sync.Once
}

// New starts the daemon: every component of the list in order, the control
// socket answering last. On an error the started ones are stopped.
func New(cfg Config, log *logrus.Logger) (*Daemon, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	d := &Daemon{cfg: cfg, log: log, notifier: sdnotify.FromEnv()}
	host := &hostTPM{path: cfg.TPM}
	status := &sourceStatus{}
	kernel := &kernelSource{cfg: cfg.KernelSource, stateDir: cfg.StateDir, status: status}
	fan := &fanotifySource{cfg: cfg.Fanotify, stateDir: cfg.StateDir, kernel: kernel, status: status}
	vt := &vtpmPart{cfg: cfg, host: host}
	d.reg = &registry{cfg: cfg, host: host, kernel: kernel}
	d.mounts = &mounts{log: log, quoter: vt.quoter, hostTarget: cfg.HostMount, listRead: cfg.ListRead}
	d.upgrade = newUpgrade(d)
	d.control = &control{cfg: cfg, log: log, mounts: d.mounts, vtpm: vt, upgrade: d.upgrade, errs: make(chan error, 1), sources: status}
	mm := &mmapSource{cfg: cfg.Mmap, fan: fan, status: status}
	fan.mmap = mm // appraise func=MMAP_CHECK: the engine verifies, the mmap source refuses
	d.list = []Component{host, d.reg, vt, d.mounts, kernel, fan, mm, &metricsSource{addr: cfg.MetricsAddr}}
	d.list = append(d.list, cfg.testSources...)
	d.list = append(d.list, &restore{mounts: d.mounts, vtpm: vt}, d.control, &readiness{d: d})
	if err := d.start(&Env{}); err != nil {
		return nil, err
	}
	fields := logrus.Fields{}
	for source, mechanism := range status.snapshot() {
		fields[source] = mechanism
	}
	log.WithFields(fields).Info("measurement sources")
	return d, nil
}

// start runs one start pass over the list. On a first start an error
// stops what started; on a rollback it is logged and the pass goes on
// (the daemon keeps serving what it can).
func (d *Daemon) start(env *Env) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.startLocked(env)
}

func (d *Daemon) startLocked(env *Env) error {
	restored := make(chan struct{})
	var once sync.Once
	markRestored := func() { once.Do(func() { close(restored) }) }
	defer markRestored()
	env.Log, env.Restored, env.Began = d.log, restored, time.Now()
	for _, c := range d.list {
		err := c.Start(env)
		if _, ok := c.(*restore); ok {
			markRestored()
		}
		if err != nil && !env.Rollback {
			d.stopLocked(false)
			return fmt.Errorf("%s: %w", c.Name(), err)
		}
		if err != nil {
			d.log.WithError(err).WithField("component", c.Name()).Error("upgrade rollback")
		}
		d.started++
	}
	return nil
}

// stop stops the running components in reverse order.
func (d *Daemon) stop(handover bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked(handover)
}

func (d *Daemon) stopLocked(handover bool) {
	for ; d.started > 0; d.started-- {
		d.list[d.started-1].Stop(handover)
	}
}

// Registry is the daemon's registry.
func (d *Daemon) Registry() *imans.Registry { return d.reg.r }

// ControlFailed yields the error that stopped the control socket.
func (d *Daemon) ControlFailed() <-chan error { return d.control.errs }

// HandedOver is closed once a successor took over (imafs upgrade).
func (d *Daemon) HandedOver() <-chan struct{} { return d.upgrade.handedOver }

// Run serves until a signal on sigs (exit code 0), a control socket
// failure (1) or a handover to a successor (0), and returns the exit code.
func (d *Daemon) Run(sigs <-chan os.Signal) int {
	for {
		select {
		case s := <-sigs:
			d.log.WithField("signal", s.String()).Info("shutting down")
			d.Notify(sdnotify.Stopping, sdnotify.Status("stopping ("+s.String()+")"))
			d.Close()
			return 0
		case err := <-d.control.errs:
			if err == nil {
				// Serve ends without an error only when an upgrade
				// stopped listening: the upgrade decides.
				continue
			}
			d.log.WithError(err).Error("control socket failed")
			d.Notify(sdnotify.Stopping, sdnotify.Status(fmt.Sprintf("stopping: control socket failed: %v", err)))
			d.Close()
			return 1
		case <-d.upgrade.handedOver:
			// The successor has swapped every mount for its own and owns
			// the state. Files opened on the old mounts just before the
			// swap are still served: let their readers finish first.
			d.mounts.drain(handoverDrainTimeout)
			d.log.Info("handed over to the new daemon; exiting")
			return 0
		}
	}
}

// Close stops every component (a shutdown: mounts unmounted, the state kept
// for the next daemon).
func (d *Daemon) Close() {
	d.closeOnce.Do(func() {
		d.stop(false)
		d.log.Info("imafs daemon stopped")
	})
}

// Notify tells the service manager (systemd, $NOTIFY_SOCKET) states; a
// no-op when the daemon was not started by one.
func (d *Daemon) Notify(states ...string) {
	if err := d.notifier.Notify(states...); err != nil {
		d.log.WithError(err).WithField("states", states).Warn("sd_notify")
	}
}
