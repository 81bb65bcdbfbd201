package daemon

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	ctl "github.com/imafs/imafs/control"
	"github.com/imafs/imafs/measurelog"
)

// probe is a measurement source of the test: at each Start it records
// whether the control socket already answered.
type probe struct {
	socket string

	mu       sync.Mutex
	starts   int
	answered []bool
	running  bool
}

func (p *probe) Name() string { return "probe" }

func (p *probe) Start(*Env) error {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := ctl.NewClient(p.socket).Call(ctx, &ctl.Request{Op: ctl.OpPing})
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starts++
	p.answered = append(p.answered, err == nil)
	p.running = true
	return nil
}

func (p *probe) Stop(bool) {
	p.mu.Lock()
	p.running = false
	p.mu.Unlock()
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// appendKernelEntry appends to the fake kernel list an ima-nsreg entry of the
// host, as the kernel does for an exec of name.
func appendKernelEntry(t *testing.T, list, name string) {
	t.Helper()
	d := sha256.Sum256([]byte("content of " + name))
	e, err := measurelog.NewEntry(measurelog.TemplateIMANSReg, 10, measurelog.Measurement{FileDigest: d[:], FileAlgo: measurelog.SHA256, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(e.AppendBinary(nil, measurelog.SHA1)); err != nil {
		t.Fatal(err)
	}
}

// waitHostEntry waits until the host list has an entry named name.
func waitHostEntry(t *testing.T, d *Daemon, name string) {
	t.Helper()
	host := d.Registry().Host().List
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for i := 0; i < host.Len(); i++ {
			if host.Entry(i).Name() == name {
				return
			}
		}
	}
	t.Fatalf("the kernel source did not record %s", name)
}

// TestFailedUpgradeRollsBack: after an upgrade whose successor fails, every
// source runs again (the kernel source records what the kernel lists: it
// used to wait forever for a restore that a rollback never announced) and
// the control socket answers only once they run, at start as after the
// rollback.
func TestFailedUpgradeRollsBack(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "kernel")
	os.Mkdir(kernel, 0o700)
	list, nsFile := filepath.Join(kernel, "binary_runtime_measurements"), filepath.Join(kernel, "namespaces")
	if err := os.WriteFile(nsFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	appendKernelEntry(t, list, "/bin/before-start")
	failing := filepath.Join(dir, "successor")
	if err := os.WriteFile(failing, []byte("#!/bin/sh\necho 'not today'\nexit 1\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "imafs.sock")
	p := &probe{socket: socket}
	cfg := Config{
		StateDir: filepath.Join(dir, "state"), Socket: socket, Executable: failing,
		KernelSource: KernelSourceConfig{Mode: "on", ListPath: list, NamespacesPath: nsFile},
		testSources:  []Component{p},
	}
	d, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	waitHostEntry(t, d, "/bin/before-start")

	_, err = ctl.NewClient(socket).Call(context.Background(), &ctl.Request{Op: ctl.OpUpgrade})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("upgrade with a failing successor: %v, want its failure", err)
	}
	appendKernelEntry(t, list, "/bin/after-rollback")
	waitHostEntry(t, d, "/bin/after-rollback")
	if _, err := ctl.NewClient(socket).Call(context.Background(), &ctl.Request{Op: ctl.OpPing}); err != nil {
		t.Fatalf("control socket after the rollback: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.starts != 2 || !p.running {
		t.Errorf("probe source: %d starts, running %v; want 2 starts (start, rollback), running", p.starts, p.running)
	}
	for i, a := range p.answered {
		if a {
			t.Errorf("start %d: the control socket answered before the sources ran", i+1)
		}
	}
}
