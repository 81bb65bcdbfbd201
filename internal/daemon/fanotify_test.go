package daemon

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/imafs/imafs/fanotify"
)

// TestConnectKeeperWaits: with --fanotify-keeper-wait, the daemon connects
// to a keeper run separately (the systemd unit, the Kubernetes sidecar)
// that starts answering only after the daemon began to look, instead of
// starting one of its own.
func TestConnectKeeperWaits(t *testing.T) {
	socket := filepath.Join(t.TempDir(), fanotify.KeeperSocket)
	log := logrus.New()
	log.SetOutput(io.Discard)
	hook := logtest.NewLocal(log)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	timer := time.AfterFunc(300*time.Millisecond, func() {
		stopped <- fanotify.RunKeeper(ctx, socket, time.Minute, log, nil)
	})
	defer timer.Stop()
	begin := time.Now()
	k, err := connectKeeper(socket, time.Minute, 10*time.Second, log)
	if err != nil {
		t.Fatalf("connectKeeper: %v", err)
	}
	if waited := time.Since(begin); waited < 250*time.Millisecond {
		t.Errorf("connected after %v, before the keeper was started", waited)
	}
	for _, e := range hook.AllEntries() {
		if e.Message == "fanotify: keeper started" || e.Level <= logrus.WarnLevel {
			t.Errorf("log: %s %q: want only the connection to the running keeper", e.Level, e.Message)
		}
	}
	if err := k.Release(); err != nil {
		t.Fatal(err)
	}
	k.Close()
	cancel()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("RunKeeper: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("keeper did not stop after Release")
	}
}
