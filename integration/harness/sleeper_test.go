package harness

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStartSleeper(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		ownMount bool
	}{
		{"pid namespace only", nil, false},
		{"with a mount namespace", []string{"--mount"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := StartSleeper(t, tc.args...)
			if ns(t, s.Pid, "pid") == ns(t, os.Getpid(), "pid") {
				t.Errorf("sleeper %d is in the test's pid namespace", s.Pid)
			}
			if own := ns(t, s.Pid, "mnt") != ns(t, os.Getpid(), "mnt"); own != tc.ownMount {
				t.Errorf("sleeper %d has its own mount namespace: %v, want %v", s.Pid, own, tc.ownMount)
			}
			status, err := os.ReadFile("/proc/" + strconv.Itoa(s.Pid) + "/status")
			if err != nil || !strings.Contains(string(status), "NSpid:\t"+strconv.Itoa(s.Pid)+"\t1\n") {
				t.Errorf("sleeper %d is not pid 1 of its namespace: %v\n%s", s.Pid, err, status)
			}
			s.Stop()
			s.Stop() // a second Stop (and the cleanup's) does nothing
			// --kill-child: the sleep dies with unshare.
			deadline := time.Now().Add(DefaultTimeout)
			for !errors.Is(unix.Kill(s.Pid, 0), unix.ESRCH) {
				if time.Now().After(deadline) {
					t.Fatalf("sleeper %d still runs after Stop", s.Pid)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	cmd := exec.Command("sh", "-c", "echo one; sleep 0.2; echo two")
	cmd.Stdout = &b
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// String while the command writes (run with -race to check the lock).
	for deadline := time.Now().Add(DefaultTimeout); !strings.Contains(b.String(), "one\n") && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "one\ntwo\n" {
		t.Errorf("SyncBuffer holds %q, want %q", got, "one\ntwo\n")
	}
}
