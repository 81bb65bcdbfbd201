package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Sleeper is a bare container: `sleep` running as pid 1 of a new pid
// namespace (see StartSleeper).
type Sleeper struct {
	// Pid is the host pid of the container's sleep.
	Pid  int
	stop func()
}

// Stop kills the container (unshare, and with it the sleep through
// --kill-child) and waits for unshare; later calls do nothing. Cleanup
// calls it too.
func (s *Sleeper) Stop() { s.stop() }

// StartSleeper starts `unshare --pid --fork --kill-child ARGS... sleep 3600`:
// a container whose only process, sleep, is pid 1 of a new pid namespace
// and shares the test's other namespaces unless ARGS asks for more (e.g.
// "--mount"); so it sees the test's mounts. It returns once the child runs
// sleep: only then is unshare's --kill-child in effect, and stopping the
// container earlier would orphan its init. It skips t unless root with
// unshare(1).
func StartSleeper(t testing.TB, args ...string) *Sleeper {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "unshare")
	argv := append([]string{"--pid", "--fork", "--kill-child"}, args...)
	cmd := exec.Command("unshare", append(argv, "sleep", "3600")...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("harness: start unshare: %v", err)
	}
	var once sync.Once
	s := &Sleeper{stop: func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}}
	t.Cleanup(s.Stop)
	for deadline := time.Now().Add(DefaultTimeout); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		kids, _ := children(cmd.Process.Pid)
		if len(kids) == 0 {
			continue
		}
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", kids[0])); strings.TrimSpace(string(comm)) == "sleep" {
			s.Pid = kids[0]
			return s
		}
	}
	t.Fatalf("harness: unshare %s started no sleep within %v", strings.Join(argv, " "), DefaultTimeout)
	return nil
}
