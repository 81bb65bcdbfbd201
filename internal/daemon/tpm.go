package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	imafsfs "github.com/imafs/imafs/fs"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/vtpm"
)

// hostTPM is the --tpm connection, closed for a handover (a swtpm socket
// serves one client) and opened again by a rollback.
type hostTPM struct {
	path string

	mu sync.Mutex
	t  *vtpm.TPM // nil: no --tpm, or closed
}

var _ Component = (*hostTPM)(nil)

func (h *hostTPM) Name() string { return "host-tpm" }

func (h *hostTPM) Start(*Env) error {
	if h.path == "" {
		return nil
	}
	t, err := vtpm.OpenHost(h.path)
	if err != nil {
		return fmt.Errorf("host tpm: %w", err)
	}
	h.mu.Lock()
	h.t = t
	h.mu.Unlock()
	return nil
}

func (h *hostTPM) Stop(bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.t != nil {
		h.t.Close()
		h.t = nil
	}
}

func (h *hostTPM) get() *vtpm.TPM {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.t
}

func (h *hostTPM) bootAggregate(algo measurelog.Algo) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.t == nil {
		return nil, errors.New("host tpm closed (handed over)")
	}
	return vtpm.BootAggregate(h.t, algo)
}

// vtpmPart is --vtpm swtpm: one swtpm per container (vtpm.Manager), which
// replays the container's list and then follows it; quotes for the control
// socket and the containers' integrity/ima/quote files.
type vtpmPart struct {
	cfg  Config
	host *hostTPM

	mgr         atomic.Pointer[vtpm.Manager] // nil when stopped or without --vtpm
	log         *logrus.Logger
	unobserve   func()
	deferAttach atomic.Bool // restoring: the restore attaches after the mounts
}

var _ imans.Observer = (*vtpmPart)(nil)

func (v *vtpmPart) Name() string { return "vtpm" }

// Start makes a manager (again after a rollback: the old one's host
// attester used the closed host TPM).
func (v *vtpmPart) Start(env *Env) error {
	if !v.cfg.VTPM {
		return nil
	}
	v.log = env.Log
	m, err := newVTPMManager(v.cfg, v.host.get(), env.Log)
	if err != nil {
		return err
	}
	v.mgr.Store(m)
	v.unobserve = env.Reg.AddObserver(v)
	return nil
}

func (v *vtpmPart) Stop(bool) {
	if v.unobserve != nil {
		v.unobserve()
		v.unobserve = nil
	}
	if m := v.mgr.Swap(nil); m != nil {
		if err := m.Close(); err != nil {
			v.log.WithError(err).Warn("vtpm close")
		}
	}
}

// Attached implements imans.Observer: the container gets its swtpm.
func (v *vtpmPart) Attached(ns *imans.Namespace) {
	if m := v.mgr.Load(); m != nil && !v.deferAttach.Load() {
		if err := m.Attach(ns.ID, ns.List); err != nil {
			v.log.WithError(err).WithField("id", ns.ID).Error("vtpm attach: the container has no quotes")
		}
	}
}

// Detached implements imans.Observer: the vTPM is stopped and its state
// removed.
func (v *vtpmPart) Detached(ns *imans.Namespace) {
	if m := v.mgr.Load(); m != nil {
		if err := m.Detach(ns.ID); err != nil {
			v.log.WithError(err).WithField("id", ns.ID).Warn("vtpm detach")
		}
	}
}

// attachAll gives each of nss its swtpm (after a restore or a rollback).
func (v *vtpmPart) attachAll(nss []*imans.Namespace, what string) {
	m := v.mgr.Load()
	if m == nil {
		return
	}
	for _, ns := range nss {
		if ns.IsDetached() {
			continue
		}
		if err := m.Attach(ns.ID, ns.List); err != nil {
			v.log.WithError(err).WithField("id", ns.ID).Error(what + ": vtpm attach: the container has no quotes")
		}
	}
}

// quote is the container's vTPM bundle for nonce.
func (v *vtpmPart) quote(ns *imans.Namespace, nonce []byte) (*vtpm.Bundle, error) {
	m := v.mgr.Load()
	if m == nil {
		return nil, errors.New("quote: the daemon runs without --vtpm")
	}
	if ns.IsHost() {
		return nil, errors.New("quote: the host has no vTPM (its TPM is the machine's)")
	}
	b, err := m.Quote(ns.ID, nonce)
	if err != nil {
		return nil, fmt.Errorf("quote %s: %w", ns.ID, err)
	}
	return b, nil
}

// quoter serves integrity/ima/quote (nil without --vtpm: ENODEV).
func (v *vtpmPart) quoter() imafsfs.Quoter {
	if !v.cfg.VTPM {
		return nil
	}
	return func(ns *imans.Namespace, nonce []byte) ([]byte, error) {
		m := v.mgr.Load()
		if ns.IsHost() || m == nil {
			return nil, imafsfs.ErrNoVTPM
		}
		b, err := m.Quote(ns.ID, nonce)
		if errors.Is(err, vtpm.ErrUnknownNamespace) {
			return nil, fmt.Errorf("%w: %v", imafsfs.ErrNoVTPM, err)
		}
		if err != nil {
			return nil, err
		}
		return b.Marshal()
	}
}

// newVTPMManager starts the per-container vTPM bookkeeping: swtpm state
// under STATE/vtpm (kept across restarts: the attestation key survives),
// sockets under cfg.VTPMSocketDir.
func newVTPMManager(cfg Config, hostTPM *vtpm.TPM, log *logrus.Logger) (*vtpm.Manager, error) {
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
