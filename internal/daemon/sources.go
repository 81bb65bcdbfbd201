package daemon

import (
	"context"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/kernelsrc"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/metrics"
)

// goroutine is a background loop of a component: cancel, then wait.
type goroutine struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func spawn(run func(ctx context.Context)) *goroutine {
	ctx, cancel := context.WithCancel(context.Background())
	g := &goroutine{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(g.done)
		run(ctx)
	}()
	return g
}

func (g *goroutine) stop() {
	if g != nil {
		g.cancel()
		<-g.done
	}
}

// sourceStatus is how each measurement source runs ("kernel",
// "fanotify", "mmap" → "off", "unavailable", or its mechanism): for
// `imafs ps --json`, the start log line and imafs_source_info.
type sourceStatus struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *sourceStatus) set(source, mechanism string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]string{}
	}
	s.m[source] = mechanism
	metrics.SetSourceInfo(source, mechanism)
}

// snapshot returns a copy of the statuses.
func (s *sourceStatus) snapshot() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

// kernelSource is the kernel measurement source: on a kernel with the
// imafs IMA series (kernel-patches/) it registers every attached container
// with the kernel and sorts the kernel's namespace-tagged measurements into
// the containers' lists; see package kernelsrc.
type kernelSource struct {
	cfg      KernelSourceConfig
	stateDir string
	status   *sourceStatus

	// Set by Start, cleared by Stop (the start list serialises them).
	unobserve func()
	loop      *goroutine
}

func (k *kernelSource) Name() string { return "kernel-source" }

// enabled reports whether the source runs (auto: when the kernel has the
// imafs series).
func (k *kernelSource) enabled() (bool, error) {
	switch k.cfg.Mode {
	case "off":
		return false, nil
	case "auto", "":
		return kernelsrc.Available(k.cfg.NamespacesPath), nil
	case "on":
		if !kernelsrc.Available(k.cfg.NamespacesPath) {
			return false, fmt.Errorf("the kernel has no %s (boot a kernel with kernel-patches/ applied)", kernelsrc.DefaultNamespacesPath)
		}
		return true, nil
	}
	return false, fmt.Errorf("--kernel-source %q: want auto, on or off", k.cfg.Mode)
}

// bootAggregate: containers' lists start with the kernel's own
// boot_aggregate (the one a verifier of the host list sees), else
// fallback's (the host TPM's), else zeros.
func (k *kernelSource) bootAggregate(fallback func(measurelog.Algo) ([]byte, error)) func(measurelog.Algo) ([]byte, error) {
	if on, _ := k.enabled(); !on {
		return fallback
	}
	kernel := kernelsrc.BootAggregate(k.cfg.ListPath)
	return func(algo measurelog.Algo) ([]byte, error) {
		d, err := kernel(algo)
		if err != nil && fallback != nil {
			return fallback(algo)
		}
		return d, err
	}
}

func (k *kernelSource) Start(env *Env) error {
	tmpl, err := kernelsrc.ParseContainerTemplate(k.cfg.ContainerTemplate)
	if err != nil {
		k.status.set("kernel", "off")
		return fmt.Errorf("--kernel-container-template: %w", err)
	}
	if on, err := k.enabled(); !on {
		k.status.set("kernel", "off")
		return err
	}
	k.status.set("kernel", "ima-series")
	src := kernelsrc.New(env.Reg, kernelsrc.Options{
		Log:            env.Log,
		CursorPath:     filepath.Join(k.stateDir, "kernel.cursor"),
		ListPath:       k.cfg.ListPath,
		NamespacesPath: k.cfg.NamespacesPath,

		ContainerTemplate: tmpl,
	})
	k.unobserve = env.Reg.AddObserver(src)
	restored := env.Restored
	k.loop = spawn(func(ctx context.Context) {
		// The kernel's backlog since the cursor belongs partly to
		// containers a previous daemon attached: read it only once they
		// are restored, or their entries would land in the host list
		// alone.
		select {
		case <-restored:
		case <-ctx.Done():
			return
		}
		if err := src.Run(ctx); err != nil {
			env.Log.WithError(err).Error("kernel source stopped")
		}
	})
	env.Log.WithField("extension", k.Name()).Info("started")
	return nil
}

func (k *kernelSource) Stop(bool) {
	if k.loop != nil {
		k.status.set("kernel", "off")
	}
	k.loop.stop()
	k.loop = nil
	if k.unobserve != nil {
		k.unobserve()
		k.unobserve = nil
	}
}

// metricsSource serves Prometheus metrics at addr/metrics (see package
// metrics); off when addr is empty.
type metricsSource struct {
	addr string
	loop *goroutine
}

func (m *metricsSource) Name() string { return "metrics" }

func (m *metricsSource) Start(env *Env) error {
	if m.addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		return fmt.Errorf("metrics: listen %s: %w", m.addr, err)
	}
	m.loop = spawn(func(ctx context.Context) {
		if err := metrics.ServeListener(ctx, ln, env.Reg, env.Log); err != nil {
			env.Log.WithError(err).Error("metrics endpoint stopped")
		}
	})
	env.Log.WithFields(logrus.Fields{"extension": m.Name(), "addr": ln.Addr().String()}).Info("started")
	return nil
}

func (m *metricsSource) Stop(bool) {
	m.loop.stop()
	m.loop = nil
}
