package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// TestShutdownUnmounts: SIGTERM makes the daemon unmount its tree in every
// container (no ENOTCONN left behind) and exit 0.
func TestShutdownUnmounts(t *testing.T) {
	d := startDaemon(t)
	c := busyboxContainer(t, false)
	attachUnshare(t, d, c, "shutdown")
	if _, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil {
		t.Fatal(err)
	}
	d.stop()
	if d.cmd.ProcessState == nil || d.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("daemon exit: %v", d.cmd.ProcessState)
	}
	mounts, err := c.Exec(0, "cat", "/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(mounts, "fuse.imafs") {
		t.Errorf("imafs still mounted in the container after shutdown:\n%s", mounts)
	}
	_, err = c.Exec(0, "cat", ima+"/runtime_measurements_count")
	if err == nil || strings.Contains(err.Error(), "not connected") {
		t.Errorf("after shutdown: %v; want the file gone, not ENOTCONN", err)
	}
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

// TestClientCommands: policy get/set, log -f, measure, ps, oci-hook poststop.
func TestClientCommands(t *testing.T) {
	d := startDaemon(t)
	c := busyboxContainer(t, false)
	attachUnshare(t, d, c, "cli")

	// imafs policy ID --set / imafs policy ID.
	pf := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pf, []byte("# operator policy\nmeasure func=FILE_CHECK mask=MAY_READ\n"), 0o644)
	if _, err := d.imafs("policy", "cli", "--set", pf); err != nil {
		t.Fatal(err)
	}
	if p, err := d.imafs("policy", "cli"); err != nil || p != "measure func=FILE_CHECK mask=MAY_READ \n" {
		t.Errorf("imafs policy cli: %q, %v", p, err)
	}
	if p, err := c.Exec(0, "cat", ima+"/policy"); err != nil || p != "measure func=FILE_CHECK mask=MAY_READ \n" {
		t.Errorf("container sees policy %q, %v", p, err)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("measure func=NOPE\n"), 0o644)
	if _, err := d.imafs("policy", "cli", "--set", bad); err == nil {
		t.Error("a bad policy was accepted")
	}

	// imafs log ID -f follows new entries.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := &harness.SyncBuffer{}
	follow := exec.CommandContext(ctx, imafsBin, "log", "cli", "--socket", d.socket, "-f")
	follow.Stdout = out
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); follow.Wait() }()
	file := filepath.Join(t.TempDir(), "later")
	os.WriteFile(file, []byte("later\n"), 0o644)
	// Measure once the follower prints the list so far: the entry then
	// reaches it by following.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "boot_aggregate") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := d.imafs("measure", "--id", "cli", "--name", "/later", file); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), " /later\n") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := out.String(); !strings.Contains(got, "boot_aggregate") || !strings.Contains(got, " /later\n") {
		t.Errorf("log -f output %q", got)
	}
	// Not measured by the policy: exit 3, nothing added.
	if _, err := d.imafs("measure", "--id", "cli", "--func", "BPRM_CHECK", "--mask", "MAY_EXEC", file); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("measure outside the policy: %v, want exit 3", err)
	}
	// A FIFO is refused at once (opening it for reading must not wait for
	// a writer: the daemon's shutdown waits for its handlers).
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.imafs("measure", "--id", "cli", fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("measure a FIFO: %v, want not a regular file", err)
	}
	if row := d.ps(t)["cli"]; row.Entries != 2 || row.Rules != 1 {
		t.Errorf("ps row %+v", row)
	}
	// Binary format through the CLI: a kernel binary record starts with PCR 10.
	if bin, err := d.imafs("log", "cli", "--format", "binary"); err != nil || len(bin) < 4 || bin[0] != 10 {
		t.Errorf("binary log: %d bytes, %v", len(bin), err)
	}

	// oci-hook at poststop detaches by id.
	hook := exec.Command(imafsBin, "oci-hook", "--socket", d.socket, "poststop")
	hook.Stdin = strings.NewReader(`{"ociVersion":"1.0.2","id":"cli","status":"stopped","bundle":"/nonexistent"}`)
	if out, err := hook.CombinedOutput(); err != nil {
		t.Fatalf("oci-hook poststop: %v: %s", err, out)
	}
	if _, ok := d.ps(t)["cli"]; ok {
		t.Error("cli still attached after poststop")
	}
	// A second poststop (runc delete after the exit watcher) is fine.
	hook = exec.Command(imafsBin, "oci-hook", "--socket", d.socket)
	hook.Stdin = strings.NewReader(`{"ociVersion":"1.0.2","id":"cli","status":"stopped"}`)
	if out, err := hook.CombinedOutput(); err != nil {
		t.Errorf("second poststop: %v: %s", err, out)
	}
}

// TestContainerPolicyDefault: --container-policy is every container's
// starting policy; container root's first load replaces it, later ones append.
func TestContainerPolicyDefault(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "default.policy")
	os.WriteFile(pf, []byte("# operator default\ndont_measure fsmagic=0x9fa0\nmeasure func=BPRM_CHECK mask=MAY_EXEC\n"), 0o644)
	d := startDaemon(t, "--container-policy", pf)
	c := busyboxContainer(t, false)
	attachUnshare(t, d, c, "defpol")
	def := "dont_measure fsmagic=0x9fa0 \nmeasure func=BPRM_CHECK mask=MAY_EXEC \n"
	if p, err := c.Exec(0, "cat", ima+"/policy"); err != nil || p != def {
		t.Errorf("initial policy %q, %v; want the operator's default %q", p, err, def)
	}
	if p, _ := d.imafs("policy", "host"); p != "" {
		t.Errorf("host policy %q, want empty (the default is for containers)", p)
	}
	for _, rule := range []string{"measure func=FILE_CHECK mask=MAY_READ uid=0", "measure func=MMAP_CHECK mask=MAY_EXEC"} {
		if _, err := c.Exec(0, "sh", "-c", "echo '"+rule+"' > "+ima+"/policy"); err != nil {
			t.Fatal(err)
		}
	}
	want := "measure func=FILE_CHECK mask=MAY_READ uid=0 \nmeasure func=MMAP_CHECK mask=MAY_EXEC \n"
	if p, err := c.Exec(0, "cat", ima+"/policy"); err != nil || p != want {
		t.Errorf("policy after two loads %q, %v; want %q", p, err, want)
	}
	// A bad default policy file: the daemon refuses to start.
	bad := filepath.Join(t.TempDir(), "bad.policy")
	os.WriteFile(bad, []byte("measure func=NOPE\n"), 0o644)
	out, err := exec.Command(imafsBin, "serve", "--socket", filepath.Join(t.TempDir(), "s"), "--state-dir", t.TempDir(), "--container-policy", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "container policy") {
		t.Errorf("serve with a bad container policy: %v: %s", err, out)
	}
}

// TestRestartReattach: a daemon killed with SIGKILL leaves a dead mount
// (ENOTCONN) in the container; a new daemon's attach replaces it, without
// restarting the container.
func TestRestartReattach(t *testing.T) {
	d := startDaemon(t)
	c := busyboxContainer(t, false)
	attachUnshare(t, d, c, "phoenix")
	d.cmd.Process.Kill()
	<-d.done
	d.cmd.ProcessState = &os.ProcessState{} // stop() has nothing left to do
	syscall.Unmount(d.hostMnt, syscall.MNT_DETACH)
	if _, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("after SIGKILL: %v, want ENOTCONN", err)
	}
	d2 := startDaemon(t)
	attachUnshare(t, d2, c, "phoenix")
	if n, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil || n != "1\n" {
		t.Errorf("after re-attach: %q, %v", n, err)
	}
	mounts, _ := c.Exec(0, "cat", "/proc/self/mountinfo")
	if k := strings.Count(mounts, "fuse.imafs"); k != 1 {
		t.Errorf("%d imafs mounts in the container, want 1 (the dead one replaced):\n%s", k, mounts)
	}
}
