package nriplugin

import (
	"context"
	"slices"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/sirupsen/logrus"
)

func TestHooks(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want []string // args of the createRuntime hook
	}{
		{Options{HookPath: "/usr/local/bin/imafs", Socket: "/run/imafs/imafs.sock"}, []string{"imafs", "oci-hook", "--socket", "/run/imafs/imafs.sock", "createRuntime"}},
		{Options{HookPath: "/opt/imafs/bin/imafs-hook", Wrapper: true}, []string{"imafs-hook", "createRuntime"}},
	} {
		h := Hooks(tc.opts)
		if len(h.CreateRuntime) != 1 || len(h.Poststop) != 1 || len(h.Prestart) != 0 || len(h.StartContainer) != 0 {
			t.Fatalf("hooks %v", h)
		}
		if got := h.CreateRuntime[0].Args; !slices.Equal(got, tc.want) || h.CreateRuntime[0].Path != tc.opts.HookPath {
			t.Errorf("createRuntime %v, want %v", got, tc.want)
		}
		if got := h.Poststop[0].Args; got[len(got)-1] != "poststop" {
			t.Errorf("poststop args %v", got)
		}
	}
}

// The plugin's events: CreateContainer adds the hooks; Stop and Remove
// detach by the container's id, an id not attached quietly.
func TestEvents(t *testing.T) {
	var detached []string
	p := &plugin{opts: Options{HookPath: "/imafs", Socket: "/s", Log: logrus.New(), Detach: func(_ context.Context, id string) error {
		detached = append(detached, id)
		if id == "gone" {
			return ErrNotAttached
		}
		return nil
	}}}
	adj, upd, err := p.CreateContainer(context.Background(), &api.PodSandbox{Name: "pod"}, &api.Container{Id: "c1"})
	if err != nil || upd != nil || adj.GetHooks() == nil || len(adj.GetHooks().CreateRuntime) != 1 {
		t.Fatalf("CreateContainer: %v, %v, %v", adj, upd, err)
	}
	if _, err := p.StopContainer(context.Background(), nil, &api.Container{Id: "c1"}); err != nil {
		t.Error(err)
	}
	if err := p.RemoveContainer(context.Background(), nil, &api.Container{Id: "gone"}); err != nil {
		t.Error(err)
	}
	if !slices.Equal(detached, []string{"c1", "gone"}) {
		t.Errorf("detached %v", detached)
	}
}
