package mmapsrc_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/mmapsrc"
)

// Issue 12's example: `python3 -c 'import ssl'` in new pid and mount
// namespaces maps _ssl's extension module, libssl and libcrypto with
// dlopen; fanotify sees none of them, the mmap source reports each once,
// with the path python used and the file's content.
func TestPythonImportSSL(t *testing.T) {
	harness.RequireRoot(t)
	// Debian's python itself, not a wrapper (a pyenv shim runs helpers
	// that map libraries too).
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skipf("needs %s: %v", python, err)
	}
	s := open(t, mmapsrc.Options{})
	// python waits for a line before importing, so the test watches its
	// pid namespace first (what it mapped at start-up is not asked for).
	// Then it imports _json, a fence: once its module is reported, any
	// second report of the others would have arrived (the ring is ordered).
	cmd := exec.Command(python, "-c", "import sys\nsys.stdin.readline()\nimport ssl\nimport _json\nprint('imported', flush=True)\nsys.stdin.readline()")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pidns, err := harness.NSIno(cmd.Process.Pid, "pid")
	if err != nil {
		t.Fatal(err)
	}
	mntns, _ := harness.NSIno(cmd.Process.Pid, "mnt")
	undo, err := s.Watch(pidns)
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	fmt.Fprintln(in)
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "imported\n" {
		t.Fatalf("python: %q %v", line, err)
	}
	want := map[string]int{"_ssl.cpython": 0, "libssl.so": 0, "libcrypto.so": 0, "_json.cpython": 0}
	timeout := time.After(harness.DefaultTimeout)
	for want["_json.cpython"] == 0 {
		select {
		case ev := <-s.Events():
			if ev.File != nil {
				ev.File.Close()
			}
			if ev.MntNS != mntns || ev.Pid != cmd.Process.Pid || ev.Err != nil {
				t.Errorf("event %+v: want python's, resolved", ev)
				continue
			}
			if ev.Kind != mmapsrc.Mmap {
				t.Errorf("event %+v: want mmap", ev)
			}
			for prefix := range want {
				if strings.HasPrefix(filepath.Base(ev.Path), prefix) {
					want[prefix]++
					if dev, ino := devIno(t, ev.Path); dev != ev.Dev || ino != ev.Ino {
						t.Errorf("%s: event dev:ino %d:%d, file %d:%d", ev.Path, ev.Dev, ev.Ino, dev, ino)
					}
					t.Logf("%v %s", ev.Kind, ev.Path)
				}
			}
		case <-timeout:
			t.Fatalf("python's libraries reported: %v, want each once", want)
		}
	}
	for prefix, n := range want {
		if n != 1 {
			t.Errorf("%s reported %d times, want once", prefix, n)
		}
	}
}
