package integration

// Attacks on the policy file by root of a container (issue 11, "Policy
// loads by path resolve where the writer stood", "A container cannot grow
// the daemon without bound", "Policy write sessions behave like the
// kernel's"): each test asserts the kernel-like outcome and that the daemon
// still serves another container afterwards.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
)

// policyContainer starts a runc container attached by d's hooks whose root
// may write its policy.
func policyContainer(t *testing.T, d *daemon) *harness.RuncContainer {
	t.Helper()
	return harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Capabilities: []string{"CAP_SYS_ADMIN"}})
}

// attackSetup starts a daemon (with extra flags) and two containers: the
// attacker and another one that must still be served afterwards.
func attackSetup(t *testing.T, extra ...string) (d *daemon, attacker, other *harness.RuncContainer) {
	t.Helper()
	d = startDaemon(t, extra...)
	return d, policyContainer(t, d), policyContainer(t, d)
}

// stillServes checks that d serves c: its list reads, its policy takes a
// rule and reads it back.
func stillServes(t *testing.T, d *daemon, c *harness.RuncContainer) {
	t.Helper()
	if out, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements"); err != nil || !strings.Contains(out, "boot_aggregate") {
		t.Errorf("other container's list %q, %v", out, err)
	}
	rule := "measure func=KEXEC_CMDLINE "
	if out, err := c.Exec(0, "sh", "-c", "echo '"+rule+"' > "+ima+"/policy && cat "+ima+"/policy"); err != nil || !strings.HasSuffix(out, rule+"\n") {
		t.Errorf("other container's policy write %q, %v", out, err)
	}
	if _, err := d.imafs("ps"); err != nil {
		t.Errorf("ps: %v", err)
	}
}

// policyWrite runs `echo LINE > policy` (or `>>` when appendMode) in c and
// returns the shell's stderr ("" on success).
func policyWrite(t *testing.T, c *harness.RuncContainer, script string) string {
	t.Helper()
	out, err := c.Exec(0, "sh", "-c", "exec 2>&1; "+script+"; true")
	if err != nil {
		t.Fatalf("%q: %v", script, err)
	}
	return out
}

// policyOf reads c's policy in c.
func policyOf(t *testing.T, c *harness.RuncContainer) string {
	t.Helper()
	out, err := c.Exec(0, "cat", ima+"/policy")
	if err != nil {
		t.Fatalf("cat policy: %v", err)
	}
	return out
}

// reusePid makes pid, free now, the pid of a new host process (sleep, in
// the host's mount namespace) through ns_last_pid, retrying while other
// processes of the machine take it first; the process is killed at cleanup.
func reusePid(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		cmd := exec.Command("bash", "-c", fmt.Sprintf("echo %d > /proc/sys/kernel/ns_last_pid; sleep 600 & echo $!; wait", pid-1))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		got, _ := strconv.Atoi(strings.TrimSpace(line))
		if got == pid {
			mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", got))
			t.Logf("pid %d is now a host process (%s)", got, mnt)
			t.Cleanup(func() { unix.Kill(got, unix.SIGKILL); cmd.Wait() })
			return
		}
		if got > 0 {
			unix.Kill(got, unix.SIGKILL)
		}
		cmd.Wait()
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			t.Skipf("pid %d was taken by another process of the machine", pid)
		}
	}
	t.Skipf("could not get pid %d again", pid)
}

// TestAttackPolicyPathAfterPidReuse: container root opens the policy file,
// hands the descriptor to a child and exits; its pid is then reused by a
// host process; the child loads a path that exists only on the host. The
// load resolves in the opener's root, pinned at open: ENOENT, as in the
// container's root, and the policy is unchanged (before: the host file
// became the container's policy).
func TestAttackPolicyPathAfterPidReuse(t *testing.T) {
	d, c, other := attackSetup(t)
	hostDir, err := os.MkdirTemp("", "imafs-hostonly-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hostDir) })
	hostPolicy := filepath.Join(hostDir, "policy")
	os.WriteFile(hostPolicy, []byte("dont_measure fsmagic=0x1\n"), 0o644)
	before := policyOf(t, c)

	// The opener is a child of a shell that reaps it (the container's init,
	// sleep, would leave a zombie holding the pid): it opens the policy,
	// forks the writer, and exits when told to.
	rootfs := filepath.Join(c.Bundle, "rootfs")
	outer := c.Spawn(t, 0, "sh", "-c", "mkfifo /tmp/go /tmp/exit; sh -c 'exec 3>"+ima+"/policy; "+
		"(read x < /tmp/go; echo "+hostPolicy+" >&3 2>/tmp/err; echo $? > /tmp/rc; exec 3>&-; touch /tmp/done) & "+
		"read y < /tmp/exit'; sleep 600")
	opener := 0
	for deadline := time.Now().Add(harness.DefaultTimeout); opener == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", outer, outer))
		for _, f := range strings.Fields(string(b)) {
			cmdline, _ := os.ReadFile("/proc/" + f + "/cmdline")
			// (a child not yet exec'd shows the outer shell's command line)
			if strings.HasPrefix(string(cmdline), "sh\x00-c\x00exec 3>") {
				opener, _ = strconv.Atoi(f)
			}
		}
	}
	if opener == 0 {
		t.Fatal("no opener process")
	}
	waitFile(t, filepath.Join(rootfs, "tmp/exit"))
	pidfd, err := unix.PidfdOpen(opener, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "tmp/exit"), []byte("x\n"), 0); err != nil {
		t.Fatal(err)
	}
	unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 10000)
	unix.Close(pidfd)
	for i := 0; i < 500; i++ { // reaped by the outer shell: the number is free
		if _, err := os.Stat("/proc/" + strconv.Itoa(opener)); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	reusePid(t, opener)
	if err := os.WriteFile(filepath.Join(rootfs, "tmp/go"), []byte("go\n"), 0); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(rootfs, "tmp/done"))
	rc, _ := os.ReadFile(filepath.Join(rootfs, "tmp/rc"))
	msg, _ := os.ReadFile(filepath.Join(rootfs, "tmp/err"))
	t.Logf("opener %d reused by a host process; load: rc %q, %q", opener, rc, msg)
	if strings.TrimSpace(string(rc)) == "0" || !strings.Contains(string(msg), "No such file or directory") {
		t.Errorf("load of a host-only path after pid reuse: rc %q, %q; want ENOENT", rc, msg)
	}
	if after := policyOf(t, c); after != before {
		t.Errorf("policy changed to %q by a host file", after)
	}
	stillServes(t, d, other)
}

// TestAttackPolicyPathErrors: the kernel's errors for loads by path
// (kernel_read_file_from_path), no escape from the container's root through
// ".." or symlinks, and a loaded file's content never in the daemon's log.
func TestAttackPolicyPathErrors(t *testing.T) {
	d, c, other := attackSetup(t)
	const secret = "root:$y$j9T$SECRET-HASH-imafs:19000:0:99999:7:::"
	if _, err := c.Exec(0, "sh", "-c", "mkdir -p /tmp/d && : > /tmp/empty && mkfifo /tmp/fifo && "+
		"echo '"+secret+"' > /tmp/shadow && ln -s /../../../etc/passwd /tmp/up && printf 'measure func=BPRM_CHECK\\n' > /tmp/good"); err != nil {
		t.Fatal(err)
	}
	before := policyOf(t, c)
	tests := []struct {
		path string
		want string // strerror in the shell's message
	}{
		{"/nonexistent", "No such file or directory"},
		{"/tmp/d", "Invalid argument"},     // not a regular file
		{"/tmp/fifo", "Invalid argument"},  // not a regular file, never opened
		{"/tmp/empty", "Invalid argument"}, // i_size 0
		{"/tmp/shadow", "Invalid argument"},
		{"/tmp/up", "Invalid argument"}, // /etc/passwd of the container: not rules
		{"/../../../../" + strings.TrimPrefix(d.log, "/"), "No such file or directory"},
	}
	for _, tt := range tests {
		msg := policyWrite(t, c, "echo "+tt.path+" > "+ima+"/policy")
		if !strings.Contains(msg, tt.want) {
			t.Errorf("load %s: %q, want %q", tt.path, msg, tt.want)
		}
	}
	if after := policyOf(t, c); after != before {
		t.Errorf("failed loads changed the policy: %q", after)
	}
	if msg := policyWrite(t, c, "echo /tmp/good > "+ima+"/policy"); msg != "" {
		t.Errorf("good load: %q", msg)
	}
	if p := policyOf(t, c); p != "measure func=BPRM_CHECK \n" {
		t.Errorf("policy after a good load %q", p)
	}
	log, _ := os.ReadFile(d.log)
	if strings.Contains(string(log), "SECRET-HASH") || strings.Contains(string(log), "root:x:0") {
		t.Errorf("the daemon log holds a loaded file's content:\n%s", log)
	}
	stillServes(t, d, other)
}

// TestAttackPolicyGrowth: container root loads large policy files again and
// again. The namespace's policy stops at the limits (--policy-max-rules,
// --policy-max-bytes): the load beyond fails with ENOSPC (a file larger than
// the byte limit with EFBIG) and changes nothing.
func TestAttackPolicyGrowth(t *testing.T) {
	d, c, other := attackSetup(t, "--policy-max-rules", "3000", "--policy-max-bytes", "1048576")
	gen := func(name string, n int) string {
		return "seq " + strconv.Itoa(n) + " | sed 's/.*/measure func=FILE_CHECK fowner=&/' > " + name
	}
	if _, err := c.Exec(0, "sh", "-c", gen("/tmp/p1500", 1500)+" && "+gen("/tmp/p20000", 20000)+
		" && head -c 1100000 /dev/zero | tr '\\0' '#' > /tmp/big && echo >> /tmp/big"); err != nil {
		t.Fatal(err)
	}
	if msg := policyWrite(t, c, "echo /tmp/p20000 > "+ima+"/policy"); !strings.Contains(msg, "No space left on device") {
		t.Errorf("20000-rule load: %q, want ENOSPC", msg)
	}
	if msg := policyWrite(t, c, "echo /tmp/big > "+ima+"/policy"); !strings.Contains(msg, "too large") {
		t.Errorf("load of a file over the byte limit: %q, want EFBIG", msg)
	}
	for i := 0; i < 2; i++ {
		if msg := policyWrite(t, c, "echo /tmp/p1500 > "+ima+"/policy"); msg != "" {
			t.Fatalf("load %d of 1500 rules: %q", i, msg)
		}
	}
	for i := 0; i < 5; i++ {
		if msg := policyWrite(t, c, "echo /tmp/p1500 > "+ima+"/policy"); !strings.Contains(msg, "No space left on device") {
			t.Errorf("load beyond 3000 rules: %q, want ENOSPC", msg)
		}
	}
	// A session mixing a good rule and a load beyond the limit: nothing.
	if msg := policyWrite(t, c, "(echo 'measure func=MODULE_CHECK'; echo /tmp/p1500) > "+ima+"/policy"); !strings.Contains(msg, "No space left on device") {
		t.Errorf("mixed session: %q", msg)
	}
	if n := d.ps(t)[c.ID].Rules; n != 3000 {
		t.Errorf("ps: %d rules, want 3000", n)
	}
	if p := policyOf(t, c); strings.Count(p, "\n") != 3000 || strings.Contains(p, "MODULE_CHECK") {
		t.Errorf("policy has %d lines, want 3000", strings.Count(p, "\n"))
	}
	stillServes(t, d, other)
}

// TestAttackPolicyAppend: `echo RULE >> policy` (O_APPEND) is accepted, as
// by the kernel (whose file position stays 0).
func TestAttackPolicyAppend(t *testing.T) {
	d, c, other := attackSetup(t)
	if msg := policyWrite(t, c, "echo 'measure func=BPRM_CHECK' >> "+ima+"/policy"); msg != "" {
		t.Fatalf("echo >> policy: %q", msg)
	}
	if msg := policyWrite(t, c, "(echo 'measure func=FILE_CHECK'; echo 'measure func=MMAP_CHECK') >> "+ima+"/policy"); msg != "" {
		t.Fatalf("two appended lines: %q", msg)
	}
	if p := policyOf(t, c); p != "measure func=BPRM_CHECK \nmeasure func=FILE_CHECK \nmeasure func=MMAP_CHECK \n" {
		t.Errorf("policy %q", p)
	}
	stillServes(t, d, other)
}

// TestAttackPolicySessionChildFlush: a child's exit closes its copy of the
// writer's descriptor (FLUSH) in the middle of a session; the session is
// still one: a later bad rule discards the earlier good one (the kernel
// applies at the last close). And `echo r > policy; cat policy` shows r.
func TestAttackPolicySessionChildFlush(t *testing.T) {
	d, c, other := attackSetup(t)
	msg := policyWrite(t, c, "exec 3>"+ima+"/policy; echo 'measure func=BPRM_CHECK' >&3; /bin/true; sleep 0.2; "+
		"echo 'measure func=BOGUS' >&3; exec 3>&-")
	if !strings.Contains(msg, "Invalid argument") {
		t.Errorf("bad rule: %q", msg)
	}
	if p := policyOf(t, c); strings.Contains(p, "BPRM_CHECK") {
		t.Errorf("the good rule of a failed session was applied: %q", p)
	}
	// A session whose child exits, then more good rules: all applied at
	// the last close, none before.
	out := policyWrite(t, c, "exec 3>"+ima+"/policy; echo 'measure func=MODULE_CHECK' >&3; /bin/true; "+
		"cat "+ima+"/policy; echo 'measure func=FIRMWARE_CHECK' >&3; exec 3>&-; echo ---; cat "+ima+"/policy")
	mid, end, _ := strings.Cut(out, "---\n")
	if strings.Contains(mid, "MODULE_CHECK") || end != "measure func=MODULE_CHECK \nmeasure func=FIRMWARE_CHECK \n" {
		t.Errorf("open session: %q; after the last close: %q", mid, end)
	}
	// What a shell writes is there for its next command, every time.
	for i := 0; i < 20; i++ {
		rule := "measure func=FILE_CHECK fowner=" + strconv.Itoa(i)
		if out := policyWrite(t, c, "echo '"+rule+"' > "+ima+"/policy; tail -n 1 "+ima+"/policy"); out != rule+" \n" {
			t.Fatalf("echo > policy; tail: %q, want %q", out, rule+" \n")
		}
	}
	stillServes(t, d, other)
}

// TestAttackPolicyUidOverflow: a uid=/fowner=/fsmagic= value kstrtoul
// can't hold is ERANGE, as in the kernel, and fails the session.
func TestAttackPolicyUidOverflow(t *testing.T) {
	d, c, other := attackSetup(t)
	before := policyOf(t, c)
	tests := []struct{ rule, want string }{
		{"measure uid=99999999999999999999999", "out of range"},
		{"measure fowner>99999999999999999999999", "out of range"},
		{"measure fsmagic=0x1ffffffffffffffff", "out of range"},
		{"measure uid=4294967296", "Invalid argument"},
	}
	for _, tt := range tests {
		msg := policyWrite(t, c, "(echo 'measure func=BPRM_CHECK'; echo '"+tt.rule+"') > "+ima+"/policy")
		if !strings.Contains(msg, tt.want) {
			t.Errorf("%q: %q, want %q", tt.rule, msg, tt.want)
		}
	}
	if after := policyOf(t, c); after != before {
		t.Errorf("policy changed by failed sessions: %q", after)
	}
	stillServes(t, d, other)
}

// TestAttackPolicyNonUTF8Bytes: a rule with bytes that are not UTF-8 is
// shown exactly, in the container and by `imafs policy ID` on the host.
func TestAttackPolicyNonUTF8Bytes(t *testing.T) {
	d, c, other := attackSetup(t)
	if msg := policyWrite(t, c, "printf 'measure fsname=\\377\\376\\200x\\n' > "+ima+"/policy"); msg != "" {
		t.Fatalf("write: %q", msg)
	}
	want := "measure fsname=\xff\xfe\x80x \n"
	if p := policyOf(t, c); p != want {
		t.Errorf("container reads %q, want %q", p, want)
	}
	if p, err := d.imafs("policy", c.ID); err != nil || p != want {
		t.Errorf("imafs policy %s: %q, %v; want %q", c.ID, p, err, want)
	}
	// The host admin's --set carries exact bytes too.
	file := filepath.Join(t.TempDir(), "p")
	os.WriteFile(file, []byte("measure fsname=\xc3\x28 \n"), 0o644)
	if _, err := d.imafs("policy", other.ID, "--set", file); err != nil {
		t.Fatal(err)
	}
	if p, err := other.Exec(0, "cat", ima+"/policy"); err != nil || p != "measure fsname=\xc3\x28 \n" {
		t.Errorf("after --set: %q, %v", p, err)
	}
	stillServes(t, d, other)
}

// waitFile waits for path to exist.
func waitFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(harness.DefaultTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear", path)
}
