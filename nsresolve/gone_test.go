package nsresolve

import (
	"errors"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReapedTaskIsGone: below a /proc/TID directory opened before the task
// was reaped, entries answer ESRCH or ENOENT, and a namespace link caught
// while the task is being reaped answers EACCES (proc_ns_get_link finds no
// task; TestChurn met it under load): all mean ErrGone. EACCES below a live
// task's directory stays a permission problem.
func TestReapedTaskIsGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dir, err := openProcDir(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dir)
	if err := cmd.Wait(); err != nil { // exited and reaped
		t.Fatal(err)
	}
	for _, name := range []string{"ns/pid", "ns/user", "status"} {
		_, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			t.Fatalf("open %s of a reaped task: no error", name)
		}
		if perr := procErr(dir, "open", name, err); !errors.Is(perr, ErrGone) {
			t.Errorf("open %s of a reaped task: %v, want ErrGone", name, perr)
		}
	}
	if _, err := statAt(dir, "ns/pid"); !errors.Is(err, ErrGone) {
		t.Errorf("stat ns/pid of a reaped task: %v, want ErrGone", err)
	}
	// What a link of a task caught while it is reaped answers.
	if err := procErr(dir, "open", "ns/pid", unix.EACCES); !errors.Is(err, ErrGone) {
		t.Errorf("EACCES below a reaped task's directory: %v, want ErrGone", err)
	}
	// A live task's EACCES (were there one) stays a permission problem.
	self, err := openProcDir(unix.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(self)
	if err := procErr(self, "open", "ns/pid", unix.EACCES); errors.Is(err, ErrGone) {
		t.Errorf("EACCES below a live task's directory: %v, want no ErrGone", err)
	}
}
