package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/metrics"
)

// fanotifySource measures and appraises on fanotify permission events in
// every attached container (stock kernels); see package fanotify. Its
// groups are held by a keeper process (`imafs fanotify-keeper`, started
// here) so that a crash or an upgrade of the daemon leaves the containers'
// accesses waiting for the next daemon rather than unmeasured.
type fanotifySource struct {
	cfg      FanotifyConfig
	stateDir string
	kernel   *kernelSource // auto: off when the kernel source runs
	mmap     *mmapSource   // appraises MMAP_CHECK with it (may be nil)
	status   *sourceStatus

	// Set by Start, cleared by Stop (the start list serialises them;
	// engMu for the mmap source's reads).
	engMu      sync.Mutex
	eng        *fanotify.Engine
	unregister func()
	log        *logrus.Logger
}

func (f *fanotifySource) Name() string { return "fanotify" }

// enabled reports whether the engine is to run (auto: unless the kernel
// source does) and whether a failure to start is fatal.
func (f *fanotifySource) enabled() (on, required bool, err error) {
	switch f.cfg.Mode {
	case "", "off":
		return false, false, nil
	case "on":
		return true, true, nil
	case "auto":
		kernel, _ := f.kernel.enabled()
		return !kernel, false, nil
	}
	return false, false, fmt.Errorf("--fanotify %q: want auto, true or false", f.cfg.Mode)
}

// running reports whether the engine runs (the mmap source's auto mode).
func (f *fanotifySource) running() bool { return f.engine() != nil }

// engine returns the running engine, nil when none runs.
func (f *fanotifySource) engine() *fanotify.Engine {
	f.engMu.Lock()
	defer f.engMu.Unlock()
	return f.eng
}

func (f *fanotifySource) Start(env *Env) error {
	on, required, err := f.enabled()
	if !on {
		f.status.set("fanotify", "off")
		return err
	}
	f.log = env.Log
	if err := f.start(env); err != nil {
		if required {
			f.status.set("fanotify", "unavailable")
			return err
		}
		env.Log.WithError(err).WithField("extension", f.Name()).Error("fanotify engine unavailable (--fanotify auto): execs and opens in containers are not measured")
		f.status.set("fanotify", "unavailable")
		return nil
	}
	f.status.set("fanotify", "fanotify")
	return nil
}

// start starts the engine and its keeper.
func (f *fanotifySource) start(env *Env) error {
	observeLatency := metrics.LatencyObserver("fanotify")
	opts := fanotify.Options{Registry: env.Reg, Log: env.Log, KeyDir: f.cfg.KeyDir, OnAnswer: func(a fanotify.Answer) {
		observeLatency(a.Latency)
		if !a.Allow {
			metrics.Denied(a.Namespace, "fanotify", a.Reason)
		}
	}}
	if f.mmap != nil {
		opts.Mmap = f.mmap
	}
	if f.cfg.FailClosed {
		opts.FailClosed = func(*imans.Namespace) bool { return true }
	}
	if f.cfg.Hold > 0 && f.stateDir != "" {
		k, err := connectKeeper(filepath.Join(f.stateDir, fanotify.KeeperSocket), f.cfg.Hold, f.cfg.KeeperWait, env.Log)
		if err != nil {
			// Measurement works without it; only a crash is worse.
			env.Log.WithError(err).Error("fanotify: no keeper: should this daemon die, the containers' execs and opens run unmeasured until it is back")
		} else {
			opts.Keeper = k
		}
	}
	eng, err := fanotify.New(opts)
	if err != nil {
		if opts.Keeper != nil {
			opts.Keeper.Close()
		}
		return fmt.Errorf("start fanotify engine: %w", err)
	}
	f.engMu.Lock()
	f.eng = eng
	f.engMu.Unlock()
	f.unregister = metrics.RegisterSource("fanotify", func() metrics.SourceStats {
		s := eng.Stats()
		return metrics.SourceStats{Events: s.Events, Allowed: s.Allowed, Denied: s.Denied, Measured: s.Measured,
			Errors: s.Errors, Timeouts: s.Timeouts, Overflows: s.Overflows, Wait: s.Latency, Pending: s.Pending}
	})
	restored := env.Restored
	go func() {
		<-restored
		// Groups of containers that exited while no daemon ran.
		if err := eng.ReleaseUnwatched(); err != nil {
			env.Log.WithError(err).Warn("fanotify: keeper: release the groups of exited containers")
		}
	}()
	env.Log.WithField("extension", f.Name()).Info("started")
	return nil
}

// Stop closes the engine, or for a handover suspends it into its keeper
// (events wait there for the successor).
func (f *fanotifySource) Stop(handover bool) {
	if f.eng == nil {
		return
	}
	f.status.set("fanotify", "off")
	f.unregister()
	eng := f.eng
	f.engMu.Lock()
	f.eng, f.unregister = nil, nil
	f.engMu.Unlock()
	if handover {
		if err := eng.Suspend(); err != nil {
			f.log.WithError(err).Warn("fanotify: suspend for the successor")
		}
		return
	}
	if err := eng.Close(); err != nil {
		f.log.WithError(err).Warn("fanotify: close")
	}
}

// connectKeeper connects to the keeper on socket, waiting up to wait for
// one run separately, and else starts one (this executable,
// `fanotify-keeper`, in a session of its own so that it outlives the
// daemon).
func connectKeeper(socket string, grace, wait time.Duration, log *logrus.Logger) (*fanotify.KeeperClient, error) {
	for deadline := time.Now().Add(wait); ; time.Sleep(100 * time.Millisecond) {
		if k, err := fanotify.DialKeeper(socket); err == nil {
			log.WithField("socket", socket).Info("fanotify: connected to a running keeper (a previous daemon's groups in it are taken over)")
			return k, nil
		}
		if !time.Now().Before(deadline) {
			break
		}
	}
	if wait > 0 {
		log.WithFields(logrus.Fields{"socket": socket, "waited": wait}).Warn("fanotify: no keeper answered: starting one in this daemon's cgroup (a crash that restarts the daemon's unit or container takes it down too)")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(exe, "fanotify-keeper", "--socket", socket, "--grace", grace.String(), "--ready-fd", "3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stderr = os.Stderr // the daemon's log stream
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start %s fanotify-keeper: %w", exe, err)
	}
	w.Close()
	go cmd.Wait() // reaped if it exits while this daemon runs
	if err := waitReady(r, "keeper", cmd.Process.Pid, 10*time.Second); err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	k, err := fanotify.DialKeeper(socket)
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	log.WithFields(logrus.Fields{"pid": cmd.Process.Pid, "socket": socket, "grace": grace}).Info("fanotify: keeper started")
	return k, nil
}
