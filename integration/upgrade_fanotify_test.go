package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// TestUpgradeFanotifyNoGap: `imafs upgrade` under `imafs serve --fanotify`
// while a runc container execs distinct scripts one after the other. The
// old daemon answers what it has read and leaves its fanotify groups to the
// keeper; the execs that come meanwhile wait for the successor, which
// measures them. Every exec is in the container's list, once, in order, and
// nothing was let through unmeasured (no violation).
func TestUpgradeFanotifyNoGap(t *testing.T) {
	needFanotifyDaemon(t)
	const n = 600
	d := startDaemon(t, "--fanotify")
	root := tmpfsRootfs(t)
	x := filepath.Join(root, "x")
	if err := os.Mkdir(x, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(x, fmt.Sprintf("u-%d", i)), []byte(fmt.Sprintf("#!/bin/sh\n: upgrade script %d\n", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Rootfs: root, Capabilities: []string{"CAP_SYS_ADMIN"}})
	runIn(t, c, "sh", "-c", "echo 'measure func=BPRM_CHECK mask=MAY_EXEC' > "+ima+"/policy")

	logFile := filepath.Join(root, "tmp", "exec.log")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	loop := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do /x/u-$i || echo "E $i"; echo $i; i=$((i+1)); done >> /tmp/exec.log`, n)
	cmd := c.Command(ctx, 0, "sh", "-c", loop)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for countLines(logFile) < n/4 {
		if ctx.Err() != nil {
			t.Fatalf("only %d execs logged", countLines(logFile))
		}
		time.Sleep(5 * time.Millisecond)
	}

	atUpgrade := countLines(logFile)
	upgradeDaemon(t, d)
	afterUpgrade := countLines(logFile)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("workload: %v: %s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("workload did not finish")
	}
	log, _ := os.ReadFile(logFile)
	if bytes.Contains(log, []byte("E ")) {
		t.Fatalf("execs failed (measure-only policy: none should):\n%s", log)
	}
	if got := countLines(logFile); got != n {
		t.Fatalf("%d execs logged, want %d", got, n)
	}

	list := runIn(t, c, "cat", ima+"/ascii_runtime_measurements")
	next := 0
	for _, l := range lines(list) {
		f := strings.Fields(l)
		if len(f) != 5 || !strings.HasPrefix(f[4], "/x/") {
			continue
		}
		if want := fmt.Sprintf("/x/u-%d", next); f[4] != want {
			t.Fatalf("list entry %q, want %s next (every exec once, in order)", l, want)
		}
		next++
	}
	if next != n {
		t.Fatalf("%d of %d execs in the list", next, n)
	}
	ps := d.ps(t)
	if v := ps[c.ID].Violations; v != 0 {
		t.Errorf("%d violations: something was let through unmeasured during the upgrade", v)
	}
	t.Logf("upgrade began after %d execs and returned after %d; all %d execs measured (%d of them begun after the upgrade began)",
		atUpgrade, afterUpgrade, n, n-atUpgrade)
}
