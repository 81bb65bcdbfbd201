package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	ctl "github.com/imafs/imafs/control"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// control is the control socket: it listens last in the start list (every
// source runs when it answers) and stops listening first for a handover.
type control struct {
	cfg     Config
	log     *logrus.Logger
	mounts  *mounts
	vtpm    *vtpmPart
	upgrade *upgrade
	errs    chan error // each server's Serve result
	reg     *imans.Registry
	sources *sourceStatus

	mu  sync.Mutex
	srv *ctl.Server // nil when not listening
}

func (c *control) Name() string { return "control" }

func (c *control) Start(env *Env) error {
	c.reg = env.Reg
	srv, err := ctl.Listen(c.cfg.Socket, ctl.HandlerFunc(c.serve), env.Log)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.srv = srv
	c.mu.Unlock()
	go func() { c.errs <- srv.Serve() }()
	return nil
}

// Stop closes the socket (waiting for its handlers), or for a handover only
// stops listening: the connection asking for the upgrade is being served.
func (c *control) Stop(handover bool) {
	c.mu.Lock()
	srv := c.srv
	c.srv = nil
	c.mu.Unlock()
	if srv == nil {
		return
	}
	if handover {
		if err := srv.StopListening(); err != nil {
			c.log.WithError(err).Warn("upgrade: stop listening")
		}
		return
	}
	srv.Close()
}

func (c *control) serve(ctx context.Context, req *ctl.Request, rw *ctl.ReplyWriter) {
	var err error
	switch req.Op {
	case ctl.OpPing:
		err = rw.Reply(&ctl.Response{})
	case ctl.OpAttach:
		err = c.attach(req, rw)
	case ctl.OpDetach:
		err = c.detach(req, rw)
	case ctl.OpPs:
		err = c.ps(rw)
	case ctl.OpLog:
		err = c.streamLog(ctx, req, rw)
	case ctl.OpPolicyGet:
		err = c.policyGet(req, rw)
	case ctl.OpPolicySet:
		err = c.policySet(req, rw)
	case ctl.OpMeasure:
		err = c.measure(req, rw)
	case ctl.OpUpgrade:
		err = c.upgrade.run(rw)
	case ctl.OpQuote:
		err = c.quote(req, rw)
	default:
		err = fmt.Errorf("unknown operation %q", req.Op)
	}
	if err != nil {
		entry := c.log.WithError(err).WithFields(logrus.Fields{"op": req.Op, "id": req.ID})
		if req.Op == ctl.OpDetach && errors.Is(err, imans.ErrNotFound) {
			// A poststop hook after the container detached itself (its
			// init exited first): the expected order, not a fault.
			entry.Debug("detach: not registered (already detached)")
		} else {
			entry.Warn("control request failed")
		}
		rw.Fail(err)
	}
}

func (c *control) namespace(id string) (*imans.Namespace, error) {
	if id == "" {
		return nil, errors.New("no namespace id")
	}
	ns, ok := c.reg.Get(id)
	if !ok {
		return nil, fmt.Errorf("namespace %s: %w", id, imans.ErrNotFound)
	}
	return ns, nil
}

func (c *control) info(ns *imans.Namespace) ctl.NamespaceInfo {
	info := ctl.NamespaceInfo{
		ID:          ns.ID,
		Pid:         ns.Init,
		Entries:     ns.List.Len(),
		Violations:  ns.List.Violations(),
		Rules:       len(ns.Policy()),
		PCR10SHA1:   hex.EncodeToString(ns.List.PCR(measurelog.SHA1, imans.DefaultPCR)),
		PCR10SHA256: hex.EncodeToString(ns.List.PCR(measurelog.SHA256, imans.DefaultPCR)),
		Degraded:    c.reg.Degraded(ns),
		Sources:     c.sources.snapshot(),
	}
	if ns.IsHost() {
		info.Namespace = fmt.Sprintf("pid:[%d]", c.reg.Resolver().HostPidNS().Ino)
	} else {
		info.Namespace = fmt.Sprintf("pid:[%d]", ns.Pinned.PidNS.Ino)
	}
	if m := c.mounts.get(ns.ID); m != nil {
		info.Mount = m.target
	}
	return info
}

func (c *control) ps(rw *ctl.ReplyWriter) error {
	resp := &ctl.Response{Namespaces: []ctl.NamespaceInfo{}}
	for _, ns := range append([]*imans.Namespace{c.reg.Host()}, c.reg.Namespaces()...) {
		resp.Namespaces = append(resp.Namespaces, c.info(ns))
	}
	return rw.Reply(resp)
}

func (c *control) attach(req *ctl.Request, rw *ctl.ReplyWriter) error {
	id := req.ID
	if id == "" {
		id = "pid" + strconv.Itoa(req.Pid)
	}
	ns, ok := c.reg.Get(id)
	var err error
	switch {
	case ok && !ns.IsHost() && ns.Init == req.Pid:
		// createRuntime and prestart hooks both configured: one attach.
		// A container restored after a restart whose mount failed then
		// gets its mount now.
		err = c.mountAgain(ns, req)
	case ok && !ns.IsHost():
		err = imans.ErrExists
	default:
		ns, err = c.attachNew(id, req)
	}
	if err != nil {
		return fmt.Errorf("attach %s: %w", id, err)
	}
	info := c.info(ns)
	return rw.Reply(&ctl.Response{Namespace: &info})
}

// mountAgain mounts the tree of an attached container that has none.
func (c *control) mountAgain(ns *imans.Namespace, req *ctl.Request) error {
	if c.mounts.get(ns.ID) != nil {
		return nil
	}
	target, err := targetFor(req.Pid, req.Rootfs, req.Target)
	if err != nil {
		return err
	}
	m, err := c.mounts.serveAt(ns, req.Pid, target, false)
	if err != nil {
		return err
	}
	c.mounts.set(ns.ID, m)
	if err := c.reg.SetMount(ns.ID, target); err != nil {
		c.log.WithError(err).WithField("id", ns.ID).Warn("mount target not saved")
	}
	return nil
}

func (c *control) attachNew(id string, req *ctl.Request) (*imans.Namespace, error) {
	target, err := targetFor(req.Pid, req.Rootfs, req.Target)
	if err != nil {
		return nil, err
	}
	ns, err := c.reg.Attach(id, req.Pid, req.OCIConfig)
	if err != nil {
		return nil, err
	}
	m, err := c.mounts.serveAt(ns, req.Pid, target, false)
	if err == nil && !ns.Pinned.Alive() {
		// The init exited while we mounted: its pid may now name another
		// process, whose namespace got our mount. (While the pinned init
		// lives, its pid can't be reused, so a live init after the mount
		// means the mount went where it should.)
		c.mounts.unmount(m)
		err = fmt.Errorf("container init %d exited during attach", req.Pid)
	}
	if err != nil {
		if derr := c.reg.Detach(id); derr != nil {
			c.log.WithError(derr).Warn("detach after failed mount")
		}
		return nil, err
	}
	c.mounts.set(id, m)
	if err := c.reg.SetMount(id, target); err != nil {
		c.log.WithError(err).WithField("id", id).Warn("mount target not saved: a restarted daemon will use " + SecurityFSTarget)
	}
	return ns, nil
}

func (c *control) detach(req *ctl.Request, rw *ctl.ReplyWriter) error {
	ns, err := c.namespace(req.ID)
	if err != nil {
		return err
	}
	if ns.IsHost() {
		return errors.New("the host namespace can't be detached")
	}
	if m := c.mounts.take(ns.ID); m != nil && ns.Pinned.Alive() {
		c.mounts.unmount(m)
	}
	if err := c.reg.Detach(ns.ID); err != nil {
		return err
	}
	return rw.Reply(&ctl.Response{})
}

func (c *control) policyGet(req *ctl.Request, rw *ctl.ReplyWriter) error {
	ns, err := c.namespace(req.ID)
	if err != nil {
		return err
	}
	text := ns.PolicyText()
	return rw.Reply(&ctl.Response{Policy: text, PolicyBytes: []byte(text)})
}

func (c *control) policySet(req *ctl.Request, rw *ctl.ReplyWriter) error {
	ns, err := c.namespace(req.ID)
	if err != nil {
		return err
	}
	text := req.Policy
	if req.PolicyBytes != nil {
		text = string(req.PolicyBytes) // exact bytes, also where not UTF-8
	}
	rules, err := policy.Parse(text)
	if err != nil {
		return fmt.Errorf("policy for %s: %w", ns.ID, err)
	}
	if err := ns.LoadPolicy(rules); err != nil {
		return fmt.Errorf("policy for %s: %w", ns.ID, err)
	}
	c.log.WithFields(logrus.Fields{"id": ns.ID, "rules": len(rules)}).Info("policy loaded by host admin")
	return rw.Reply(&ctl.Response{})
}

func (c *control) measure(req *ctl.Request, rw *ctl.ReplyWriter) error {
	ns, err := c.namespace(req.ID)
	if err != nil {
		return err
	}
	if !filepath.IsAbs(req.Path) {
		return fmt.Errorf("measure: path %q is not absolute", req.Path)
	}
	fn, mask := policy.FileCheck, policy.MayRead
	if req.Func != "" {
		var ok bool
		if fn, ok = policy.ParseFunc(req.Func); !ok {
			return fmt.Errorf("measure: unknown func %q", req.Func)
		}
	}
	if req.Mask != "" {
		var ok bool
		if mask, ok = policy.ParseMask(req.Mask); !ok {
			return fmt.Errorf("measure: unknown mask %q", req.Mask)
		}
	}
	// O_NONBLOCK: opening a FIFO must not block the handler (and with it
	// the daemon's shutdown, which waits for handlers); it is refused
	// below as not a regular file.
	f, err := os.OpenFile(req.Path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("measure: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("measure %s: not a regular file", req.Path)
	}
	ev, err := imans.EventFor(f, fn, mask, 0, 0)
	if err != nil {
		return err
	}
	name := req.Name
	if name == "" {
		name = req.Path
	}
	dec, err := c.reg.MeasureFile(ns, ev, f, name)
	if err != nil {
		return err
	}
	return rw.Reply(&ctl.Response{Measured: dec.Actions&policy.Measure != 0})
}

func (c *control) quote(req *ctl.Request, rw *ctl.ReplyWriter) error {
	ns, err := c.namespace(req.ID)
	if err != nil {
		return err
	}
	nonce, err := ctl.ParseNonce(req.Nonce)
	if err != nil {
		return fmt.Errorf("quote: %w", err)
	}
	b, err := c.vtpm.quote(ns, nonce)
	if err != nil {
		return err
	}
	return rw.Reply(&ctl.Response{Bundle: b})
}

func (c *control) streamLog(ctx context.Context, req *ctl.Request, rw *ctl.ReplyWriter) error {
	ns, err := c.namespace(req.ID)
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
	if err := rw.Reply(&ctl.Response{Stream: true}); err != nil {
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
