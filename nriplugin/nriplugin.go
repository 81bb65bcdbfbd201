// Package nriplugin is `imafs nri-plugin`: a Node Resource Interface plugin
// (github.com/containerd/nri's stub) that gives every container containerd
// 2.x creates (a Kubernetes node's CRI flow) an imafs tree, with nothing
// but imafs on the node.
//
// At CreateContainer it adds two OCI hooks to the container's spec: at
// createRuntime `imafs oci-hook createRuntime` (attach with the
// container's host pid and its bundle's config.json, before pivot_root:
// the same path as podman's hooks.d) and at poststop `imafs oci-hook
// poststop`. The container's imafs ID is the OCI id runc gets, which in
// containerd's CRI is the CRI container ID. Pod sandboxes (pause
// containers) are never created through CreateContainer, so never attached.
// At StopContainer and RemoveContainer the plugin also detaches the
// container itself (an already-detached one is not an error), so a
// container whose poststop hook did not run is not left attached.
//
// NRI is fail-open: a container created while the plugin is not
// registered has no hooks and no tree (see contrib/nri/README.md).
package nriplugin

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/sirupsen/logrus"
)

// Options configure the plugin.
type Options struct {
	// HookPath is the imafs binary the hooks run, as the runtime (on the
	// host) sees it.
	HookPath string
	// Socket is the imafs daemon's control socket the hooks call.
	Socket string
	// Wrapper: HookPath is a wrapper called as `NAME STAGE` that finds the
	// socket itself (the DaemonSet's fail-open imafs-hook), not imafs.
	Wrapper bool
	// Name and Index register the plugin with NRI (Index orders plugins:
	// "10" runs before "90").
	Name, Index string
	// NRISocket is NRI's socket (empty: NRI's default).
	NRISocket string
	// Detach detaches a container by id; an id not attached must return
	// an error wrapping ErrNotAttached (or nil).
	Detach func(ctx context.Context, id string) error
	Log    *logrus.Logger
}

// ErrNotAttached is what Options.Detach wraps for an id not attached.
var ErrNotAttached = errors.New("not attached")

type plugin struct{ opts Options }

// Run registers with NRI and serves until ctx ends or NRI goes away.
func Run(ctx context.Context, opts Options) error {
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	so := []stub.Option{stub.WithPluginName(opts.Name), stub.WithPluginIdx(opts.Index)}
	if opts.NRISocket != "" {
		so = append(so, stub.WithSocketPath(opts.NRISocket))
	}
	s, err := stub.New(&plugin{opts: opts}, so...)
	if err != nil {
		return fmt.Errorf("nri plugin: %w", err)
	}
	if err := s.Run(ctx); err != nil {
		return fmt.Errorf("nri plugin: %w", err)
	}
	return nil
}

// Hooks returns the hooks the plugin adds to a container.
func Hooks(opts Options) *api.Hooks {
	hook := func(stage string) []*api.Hook {
		args := []string{"imafs", "oci-hook", "--socket", opts.Socket, stage}
		if opts.Wrapper {
			args = []string{filepath.Base(opts.HookPath), stage}
		}
		return []*api.Hook{{Path: opts.HookPath, Args: args}}
	}
	return &api.Hooks{CreateRuntime: hook("createRuntime"), Poststop: hook("poststop")}
}

func (p *plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	adj := &api.ContainerAdjustment{}
	adj.AddHooks(Hooks(p.opts))
	p.opts.Log.WithFields(logrus.Fields{"id": ctr.GetId(), "name": ctr.GetName(), "pod": pod.GetName(), "namespace": pod.GetNamespace()}).Debug("nri: hooks added")
	return adj, nil, nil
}

func (p *plugin) StopContainer(ctx context.Context, _ *api.PodSandbox, ctr *api.Container) ([]*api.ContainerUpdate, error) {
	p.detach(ctx, ctr.GetId(), "stop")
	return nil, nil
}

func (p *plugin) RemoveContainer(ctx context.Context, _ *api.PodSandbox, ctr *api.Container) error {
	p.detach(ctx, ctr.GetId(), "remove")
	return nil
}

func (p *plugin) detach(ctx context.Context, id, why string) {
	if p.opts.Detach == nil || id == "" {
		return
	}
	if err := p.opts.Detach(ctx, id); err != nil && !errors.Is(err, ErrNotAttached) {
		p.opts.Log.WithError(err).WithFields(logrus.Fields{"id": id, "event": why}).Warn("nri: detach")
	}
}
