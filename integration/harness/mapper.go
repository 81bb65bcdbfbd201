package harness

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	//go:embed csrc/mapper.c
	mapperC []byte
	//go:embed csrc/lib.c
	libC []byte
)

// BuildMapper compiles the mapping workload (csrc/mapper.c: mmap, mprotect,
// dlopen, LD_PRELOAD and mmap loops on command) and a small shared library
// into dir with gcc.
func BuildMapper(dir string) (mapper, lib string, err error) {
	mapper, lib = filepath.Join(dir, "mapper"), filepath.Join(dir, "libt.so")
	for _, b := range []struct {
		src  []byte
		name string
		args []string
	}{
		{mapperC, "mapper.c", []string{"-O2", "-Wall", "-o", mapper}},
		{libC, "lib.c", []string{"-shared", "-fPIC", "-o", lib}},
	} {
		src := filepath.Join(dir, b.name)
		if err := os.WriteFile(src, b.src, 0o644); err != nil {
			return "", "", fmt.Errorf("harness: %w", err)
		}
		if out, err := exec.Command("gcc", append(b.args, src)...).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("harness: gcc %s: %w: %s", b.name, err, out)
		}
	}
	return mapper, lib, nil
}

// Mapper is the mapping workload running as pid 1 of new pid and mount
// namespaces (see StartMapper).
type Mapper struct {
	Pid          int    // host pid
	PidNS, MntNS uint64 // its namespaces' inodes
	in           io.WriteCloser
	out          *bufio.Reader
	cmd          *exec.Cmd
}

// StartMapper starts the workload bin (from BuildMapper) in new pid and
// mount namespaces; Cleanup kills it.
func StartMapper(t testing.TB, bin string) *Mapper {
	t.Helper()
	RequireRoot(t)
	return StartWorkload(t, exec.Command(bin))
}

// StartWorkload starts cmd, a workload that answers a line per command on
// stdout (the mapper, a test binary's own workload), as pid 1 of new pid
// and mount namespaces, killed with the test (and with its parent);
// Cleanup kills it.
func StartWorkload(t testing.TB, cmd *exec.Cmd) *Mapper {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	m := StartLines(t, cmd)
	var err error
	if m.PidNS, err = NSIno(m.Pid, "pid"); err != nil {
		t.Fatal(err)
	}
	if m.MntNS, err = NSIno(m.Pid, "mnt"); err != nil {
		t.Fatal(err)
	}
	return m
}

// StartLines starts cmd, a process that answers a line per command on
// stdout (Ask), where cmd says (its namespaces are left as they are:
// PidNS and MntNS stay 0); Cleanup kills it.
func StartLines(t testing.TB, cmd *exec.Cmd) *Mapper {
	t.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("harness: start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	return &Mapper{Pid: cmd.Process.Pid, in: in, out: bufio.NewReader(out), cmd: cmd}
}

// Close ends the workload's stdin (a workload that stops at EOF) and
// waits for it to exit.
func (m *Mapper) Close() error {
	m.in.Close()
	return m.cmd.Wait()
}

// Do runs one command (see csrc/mapper.c) and returns what follows "ok"
// in its answer; anything else fails t.
func (m *Mapper) Do(t testing.TB, cmd string) string {
	t.Helper()
	s := m.Ask(t, cmd)
	if !strings.HasPrefix(s, "ok") {
		t.Fatalf("harness: mapper %s: %q", cmd, s)
	}
	return strings.TrimSpace(strings.TrimPrefix(s, "ok"))
}

// Ask runs one command and returns the workload's answer line, whatever it
// says; no answer within DefaultTimeout fails t.
func (m *Mapper) Ask(t testing.TB, cmd string) string {
	t.Helper()
	if _, err := fmt.Fprintln(m.in, cmd); err != nil {
		t.Fatalf("harness: workload %s: %v", cmd, err)
	}
	line := make(chan string, 1)
	go func() { s, _ := m.out.ReadString('\n'); line <- strings.TrimSpace(s) }()
	select {
	case s := <-line:
		return s
	case <-time.After(DefaultTimeout):
		t.Fatalf("harness: workload %s: no answer within %v", cmd, DefaultTimeout)
	}
	return ""
}

// Exit ends the workload and waits until it is gone.
func (m *Mapper) Exit(t testing.TB) {
	t.Helper()
	fmt.Fprintln(m.in, "exit")
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("harness: mapper exit: %v", err)
		}
	case <-time.After(DefaultTimeout):
		t.Fatalf("harness: mapper did not exit within %v", DefaultTimeout)
	}
}
