package daemon

import (
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/ocipolicy"
	"github.com/imafs/imafs/policy"
)

// registry is the imans.Registry as a component: made on the first start
// (the host journal replayed), frozen for a handover and thawed by a
// rollback, closed (the state kept) at shutdown.
type registry struct {
	cfg    Config
	host   *hostTPM
	kernel *kernelSource
	r      *imans.Registry // set once by the first Start, before any reader
	log    *logrus.Logger
}

func (g *registry) Name() string { return "registry" }

func (g *registry) Start(env *Env) error {
	g.log = env.Log
	if g.r != nil {
		env.Reg = g.r
		if err := g.r.Thaw(); err != nil {
			return fmt.Errorf("journals: %w", err)
		}
		return nil
	}
	opts, err := g.options(env)
	if err != nil {
		return err
	}
	r, err := imans.NewRegistry(opts)
	if err != nil {
		return err
	}
	g.r, env.Reg = r, r
	return nil
}

// options are the registry's options from the configuration: the
// containers' initial policy, boot_aggregate from the kernel source, else
// the host TPM, else zeros.
func (g *registry) options(env *Env) (imans.Options, error) {
	opts := imans.Options{StateDir: g.cfg.StateDir, Log: env.Log, PolicyLimits: g.cfg.PolicyLimits}
	if p := g.cfg.ContainerPolicy; p != "" {
		text, err := os.ReadFile(p)
		if err != nil {
			return opts, fmt.Errorf("container policy: %w", err)
		}
		rules, err := policy.Parse(string(text))
		if err != nil {
			return opts, fmt.Errorf("container policy %s: %w", p, err)
		}
		opts.DefaultContainerPolicy = rules
	}
	if g.cfg.TPM != "" {
		// Computed at each attach from the PCRs as they are then (they
		// don't change after boot on a real host).
		opts.BootAggregate = g.host.bootAggregate
	}
	opts.BootAggregate = g.kernel.bootAggregate(opts.BootAggregate)
	// A container's OCI annotations (org.imafs.policy, org.imafs.policy-file
	// in PolicyDir) set its starting policy at attach.
	reader := ocipolicy.Reader{Dir: g.cfg.PolicyDir, Limits: opts.PolicyLimits}
	opts.StartPolicy = func(_ string, config []byte) (policy.Policy, error) {
		rules, _, err := reader.Policy(config)
		return rules, err
	}
	return opts, nil
}

func (g *registry) Stop(handover bool) {
	if handover {
		g.r.Freeze()
		return
	}
	// Close keeps every container's state: the next daemon on this state
	// directory re-attaches the containers still running.
	if err := g.r.Close(); err != nil {
		g.log.WithError(err).Warn("close registry")
	}
}
