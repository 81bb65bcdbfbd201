package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// step is a component of the test that logs its starts and stops.
type step struct {
	name string
	fail error
	log  *[]string
}

func (s *step) Name() string { return s.name }

func (s *step) Start(*Env) error {
	*s.log = append(*s.log, "start "+s.name)
	return s.fail
}

func (s *step) Stop(handover bool) {
	what := "stop "
	if handover {
		what = "handover "
	}
	*s.log = append(*s.log, what+s.name)
}

// listConfig is a daemon with only the core and the test's components.
func listConfig(t *testing.T, steps ...Component) Config {
	dir := t.TempDir()
	return Config{
		StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "s"),
		KernelSource: KernelSourceConfig{Mode: "off"},
		testSources:  steps,
	}
}

// TestStartFailureStopsInReverse: a component that fails to start stops
// those started before it, in reverse order, and New names it.
func TestStartFailureStopsInReverse(t *testing.T) {
	var log []string
	cfg := listConfig(t, &step{name: "a", log: &log}, &step{name: "b", log: &log, fail: errors.New("no luck")},
		&step{name: "c", log: &log})
	_, err := New(cfg, quietLog())
	if err == nil || err.Error() != "b: no luck" {
		t.Fatalf("New = %v, want b's failure", err)
	}
	if got, want := strings.Join(log, ", "), "start a, start b, stop a"; got != want {
		t.Errorf("steps: %s; want %s", got, want)
	}
	if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
		t.Errorf("control socket: %v, want none (it listens last)", err)
	}
}

// TestStopAndRollback: a handover stops every component in reverse with
// handover set, and the rollback starts the same list again.
func TestStopAndRollback(t *testing.T) {
	var log []string
	d, err := New(listConfig(t, &step{name: "a", log: &log}, &step{name: "b", log: &log}), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	names := func() (out []string) {
		for _, c := range d.list {
			out = append(out, c.Name())
		}
		return out
	}
	if got, want := strings.Join(names(), " "), "host-tpm registry vtpm mounts kernel-source fanotify mmap metrics a b restore control readiness"; got != want {
		t.Fatalf("start list: %s; want %s", got, want)
	}
	d.stop(true)
	if err := d.start(&Env{Rollback: true, RollbackErr: errors.New("successor failed")}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	want := "start a, start b, handover b, handover a, start a, start b, stop b, stop a"
	if got := strings.Join(log, ", "); got != want {
		t.Errorf("steps: %s; want %s", got, want)
	}
}

func TestKernelSourceEnabled(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "namespaces")
	os.WriteFile(present, nil, 0o600)
	missing := filepath.Join(dir, "nosuch")
	for _, tc := range []struct {
		mode, path string
		on         bool
		err        string
	}{
		{"off", present, false, ""},
		{"auto", present, true, ""},
		{"auto", missing, false, ""},
		{"on", present, true, ""},
		{"on", missing, false, "the kernel has no"},
		{"maybe", present, false, `--kernel-source "maybe": want auto, on or off`},
	} {
		k := &kernelSource{cfg: KernelSourceConfig{Mode: tc.mode, NamespacesPath: tc.path}}
		on, err := k.enabled()
		if on != tc.on || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s with %s: %v, %v; want %v, %q", tc.mode, filepath.Base(tc.path), on, err, tc.on, tc.err)
		}
	}
}

// TestKernelContainerTemplate: a bad --kernel-container-template fails the
// start even where the kernel has no imafs series.
func TestKernelContainerTemplate(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nosuch")
	for _, tc := range []struct{ tmpl, err string }{
		{"", ""}, {"ima-ng", ""}, {"ima-nsreg", ""}, {"ima-ns", ""}, {"ima-sig", `kernel container template "ima-sig": want ima-ng or ima-nsreg`},
	} {
		k := &kernelSource{cfg: KernelSourceConfig{Mode: "auto", NamespacesPath: missing, ContainerTemplate: tc.tmpl}, status: &sourceStatus{}}
		err := k.Start(nil)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Start with %q: %v, want %q", tc.tmpl, err, tc.err)
		}
	}
}
