package daemon

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	ctl "github.com/imafs/imafs/control"
	"github.com/imafs/imafs/sdnotify"
)

// upgradeTimeout bounds how long a successor may take to be ready.
const upgradeTimeout = 60 * time.Second

// notifyBarrierTimeout bounds how long an upgrade's successor waits for
// systemd to acknowledge its MAINPID= (BARRIER=1).
const notifyBarrierTimeout = 5 * time.Second

// upgrade hands the daemon over to a successor (imafs upgrade): it stops
// the list for a handover (the control socket stops listening, the sources
// leave what the successor takes over, the registry freezes, the mounts
// keep serving), starts the successor and waits for its readiness. If the
// successor fails, the same start list New ran brings everything back.
type upgrade struct {
	d          *Daemon
	running    atomic.Bool
	handedOver chan struct{} // closed once a successor took over
}

func newUpgrade(d *Daemon) *upgrade { return &upgrade{d: d, handedOver: make(chan struct{})} }

// run is the control request upgrade.
func (u *upgrade) run(rw *ctl.ReplyWriter) error {
	if !u.running.CompareAndSwap(false, true) {
		return errors.New("upgrade: already in progress")
	}
	defer u.running.Store(false)
	d := u.d
	exe := d.cfg.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("upgrade: own executable: %w", err)
		}
	}
	begin := time.Now()
	d.log.WithField("executable", exe).Info("upgrade: handing over")
	d.Notify(sdnotify.Status("upgrading: handing over to a successor"))
	d.mu.Lock()
	d.stopLocked(true)
	pid, err := u.spawnSuccessor(exe)
	if err != nil {
		d.log.WithError(err).Error("upgrade failed; this daemon goes on")
		d.startLocked(&Env{Rollback: true, RollbackErr: err})
		d.mu.Unlock()
		return fmt.Errorf("upgrade: %w", err)
	}
	d.mu.Unlock()
	d.log.WithFields(logrus.Fields{"successor": pid, "took": time.Since(begin).String()}).Info("upgrade: the successor took over")
	if err := rw.Reply(&ctl.Response{Pid: pid}); err == nil {
		rw.Flush()
	}
	close(u.handedOver)
	return nil
}

// spawnSuccessor starts exe as `serve ARGS --takeover-fd 3` in its own
// session and waits until it reports that it is ready.
func (u *upgrade) spawnSuccessor(exe string) (int, error) {
	d := u.d
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
		d.Notify(sdnotify.MainPID(os.Getpid()))
		cmd.Process.Kill()
		cmd.Wait() // ECHILD for a sibling: the service manager reaps it
		return 0, err
	}
	pid := cmd.Process.Pid
	cmd.Process.Release() // it outlives this daemon
	return pid, nil
}

// readiness is the last step of the start list: the daemon serves. It
// tells the service manager, and an upgrade's predecessor (TakeoverFD).
type readiness struct{ d *Daemon }

func (r *readiness) Name() string { return "readiness" }
func (r *readiness) Stop(bool)    {}

func (r *readiness) Start(env *Env) error {
	d := r.d
	if env.Rollback {
		d.Notify(sdnotify.MainPID(os.Getpid()), sdnotify.Ready, sdnotify.Status(fmt.Sprintf("serving (upgrade failed: %v)", env.RollbackErr)))
		return nil
	}
	d.log.WithFields(logrus.Fields{"socket": d.cfg.Socket, "state_dir": d.cfg.StateDir, "pid": os.Getpid()}).Info("imafs daemon ready")
	containers := len(env.Reg.Namespaces())
	if d.cfg.TakeoverFD <= 0 {
		d.Notify(sdnotify.Ready, sdnotify.Status(fmt.Sprintf("serving (%d containers restored at start)", containers)))
		return nil
	}
	// Under systemd this process becomes the service's main process
	// before its predecessor, the one systemd knows, may exit.
	d.Notify(sdnotify.MainPID(os.Getpid()), sdnotify.Ready,
		sdnotify.Status(fmt.Sprintf("serving (upgraded: took over %d containers)", containers)))
	if err := d.notifier.Barrier(notifyBarrierTimeout); err != nil {
		d.log.WithError(err).Warn("upgrade: systemd may not have read MAINPID= yet")
	}
	f := os.NewFile(uintptr(d.cfg.TakeoverFD), "takeover")
	if _, err := fmt.Fprintf(f, "ready %d\n", os.Getpid()); err != nil {
		d.log.WithError(err).Warn("upgrade: report readiness")
	}
	f.Close()
	return nil
}
