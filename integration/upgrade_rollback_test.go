package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpgradeRollbackAfterSwap: a successor that swapped every mount for
// its own and then died before it was ready leaves dead mounts behind; the
// daemon's rollback mounts each container's tree again (also where its old
// connection already ended), so the container reads its list.
func TestUpgradeRollbackAfterSwap(t *testing.T) {
	d, private := startDaemonFromCopy(t)
	c := busyboxContainer(t, false)
	attachUnshare(t, d, c, "rs")
	before := takeSnapshot(t, d, []string{"rs"})
	// The successor: the real imafs with its readiness pipe diverted;
	// killed (-9) once it says it is ready, i.e. after its swaps, without
	// a word to this daemon (EOF on the real pipe).
	fifo := filepath.Join(t.TempDir(), "ready")
	wrapper := fmt.Sprintf(`#!/bin/bash
mkfifo %[2]s
%[1]s "$@" 3>%[2]s &
pid=$!
read -r line < %[2]s
kill -9 $pid
wait $pid
echo "successor killed after: $line" >&2
exit 1
`, imafsBin, fifo)
	if err := os.Remove(private); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(private, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := d.imafs("upgrade"); err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("upgrade to a successor that dies: %q, %v\n%s", out, err, d.logText())
	}
	if !strings.Contains(d.logText(), "successor killed after: ready") {
		t.Fatalf("the successor did not get as far as its swaps:\n%s", d.logText())
	}
	select {
	case err := <-d.done:
		t.Fatalf("daemon exited after a failed upgrade: %v\n%s", err, d.logText())
	default:
	}
	sameSnapshot(t, "after a failed upgrade", before, takeSnapshot(t, d, []string{"rs"}))
	if out, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil {
		t.Errorf("container read after the rollback: %v: %s\n%s", err, out, d.logText())
	}
	if mounts, _ := c.Exec(0, "cat", "/proc/self/mountinfo"); strings.Count(mounts, "fuse.imafs") != 1 {
		t.Errorf("%d imafs mounts after the rollback:\n%s", strings.Count(mounts, "fuse.imafs"), mounts)
	}
}
