package vtpm

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// helperEnv makes the test binary act as a daemon that starts a swtpm,
// prints its pid, and waits to be killed.
const helperEnv = "VTPM_TEST_DAEMON_STATE"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		log := logrus.New()
		log.SetLevel(logrus.WarnLevel)
		v, err := StartSWTPM(SWTPMOptions{ID: "helper", StateDir: dir, Log: log})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("pid", v.Pid())
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// processGone reports whether pid has exited (gone, or a zombie waiting
// for a parent that is not us).
func processGone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(data))
	return len(f) > 2 && f[2] == "Z"
}

// TestDaemonCrashLeavesNoSWTPM: kill -9 of the daemon ends its swtpm
// (--terminate), and a new daemon can start one on the same state dir.
func TestDaemonCrashLeavesNoSWTPM(t *testing.T) {
	needSWTPM(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var swtpmPid int
	line, err := bufio.NewReader(out).ReadString('\n')
	if err == nil && strings.HasPrefix(line, "pid ") {
		swtpmPid, _ = strconv.Atoi(strings.TrimSpace(line[4:]))
	}
	if swtpmPid <= 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper daemon: %q %v", line, err)
	}
	if processGone(swtpmPid) {
		t.Fatal("swtpm not running under the helper daemon")
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for !processGone(swtpmPid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(swtpmPid, syscall.SIGKILL)
			t.Fatalf("swtpm pid %d outlived its daemon by 10 s", swtpmPid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The successor daemon starts a swtpm on the same state directory.
	v := startNSIn(t, "helper", dir, nil)
	if err := v.Resync(nil); err != nil {
		t.Fatal(err)
	}
}
