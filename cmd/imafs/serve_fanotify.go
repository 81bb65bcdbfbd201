package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/metrics"
)

// The fanotify measurement source: `imafs serve --fanotify` measures and
// appraises on fanotify permission events in every attached container
// (stock kernels, no IMA namespaces); see package fanotify. Its groups are
// held by a keeper process (`imafs fanotify-keeper`, started here) so that
// a crash or an upgrade of the daemon leaves the containers' accesses
// waiting for the next daemon rather than unmeasured.
func init() {
	var enabled, failClosed bool
	var keyDir string
	var hold, keeperWait time.Duration
	registerServeExtension(serveExtension{
		name: "fanotify",
		flags: func(fl *flag.FlagSet) {
			fl.BoolVar(&enabled, "fanotify", false, "measure and appraise on fanotify permission events in attached containers (stock kernels)")
			fl.StringVar(&keyDir, "fanotify-keys", "/etc/imafs/keys", "appraisal keys of each container: DIR/<container id>/*.{pem,der,crt,cer,x509,pub}")
			fl.BoolVar(&failClosed, "fanotify-fail-closed", false, "deny accesses that cannot be measured in every container (default: only in containers whose policy appraises)")
			fl.DurationVar(&hold, "fanotify-hold", 30*time.Second, "after a crash, containers' execs and opens wait this long for a restarted daemon before they are allowed unmeasured (a keeper process holds the fanotify groups); 0: no keeper, allowed at once")
			fl.DurationVar(&keeperWait, "fanotify-keeper-wait", 0, "wait this long for a keeper run separately (a systemd unit, a Kubernetes sidecar) to answer on STATE_DIR/"+fanotify.KeeperSocket+" before starting one")
		},
		start: func(env serveEnv) (func(), error) {
			if !enabled {
				return nil, nil
			}
			observeLatency := metrics.LatencyObserver("fanotify")
			opts := fanotify.Options{Registry: env.Reg, Log: env.Log, KeyDir: keyDir, OnAnswer: func(a fanotify.Answer) {
				observeLatency(a.Latency)
				if !a.Allow {
					metrics.Denied(a.Namespace, "fanotify", a.Reason)
				}
			}}
			if failClosed {
				opts.FailClosed = func(*imans.Namespace) bool { return true }
			}
			if hold > 0 && env.StateDir != "" {
				k, err := connectKeeper(filepath.Join(env.StateDir, fanotify.KeeperSocket), hold, keeperWait, env.Log)
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
				return nil, fmt.Errorf("start fanotify engine: %w", err)
			}
			unregister := metrics.RegisterSource("fanotify", func() metrics.SourceStats {
				s := eng.Stats()
				return metrics.SourceStats{Events: s.Events, Allowed: s.Allowed, Denied: s.Denied, Measured: s.Measured,
					Errors: s.Errors, Timeouts: s.Timeouts, Overflows: s.Overflows, Wait: s.Latency, Pending: s.Pending}
			})
			go func() {
				if env.Restored == nil {
					return
				}
				<-env.Restored
				// Groups of containers that exited while no daemon ran.
				if err := eng.ReleaseUnwatched(); err != nil {
					env.Log.WithError(err).Warn("fanotify: keeper: release the groups of exited containers")
				}
			}()
			return func() {
				unregister()
				if env.HandingOver != nil && env.HandingOver() {
					if err := eng.Suspend(); err != nil {
						env.Log.WithError(err).Warn("fanotify: suspend for the successor")
					}
					return
				}
				if err := eng.Close(); err != nil {
					env.Log.WithError(err).Warn("fanotify: close")
				}
			}, nil
		},
	})
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
