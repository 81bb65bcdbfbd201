package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// Attacks on the tree itself and on who may read it (issue 11): a hostile
// container (root or not) tries to change or delete the files, read more
// than the kernel lets it, or starve its neighbours.

// sec is where a container sees the root of its tree.
const sec = "/sys/kernel/security"

// installTreeop builds integration/treeop (static, so that it runs in a
// busybox rootfs) as /treeop in c's rootfs, or, for a nil c, into a
// directory every uid can reach; it returns the binary's host path.
func installTreeop(t *testing.T, c *harness.RuncContainer) string {
	t.Helper()
	bin := filepath.Join(harness.TempDir(t), "treeop")
	if c != nil {
		bin = filepath.Join(c.Bundle, "rootfs", "treeop")
	}
	gobin := "go"
	if _, err := exec.LookPath(gobin); err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(gobin, "build", "-o", bin, "github.com/imafs/imafs/integration/treeop")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build treeop: %v\n%s", err, out)
	}
	return bin
}

// treeAttack is one change of the tree under root (a mount point) and
// securityfs's answer to uid 0 and to anyone else.
type treeAttack struct {
	op            string
	args          []string // relative to the root of the tree
	root, nonRoot string
}

func treeAttacks() []treeAttack {
	// may_linkat refuses a non-root link of a file it can't read and write
	// (fs.protected_hardlinks) before the directory's permission check.
	linkNonRoot := "EACCES"
	if b, _ := os.ReadFile("/proc/sys/fs/protected_hardlinks"); strings.TrimSpace(string(b)) == "1" {
		linkNonRoot = "EPERM"
	}
	return []treeAttack{
		{"unlink", []string{"ima/policy"}, "EPERM", "EACCES"},
		{"unlink", []string{"ima/ascii_runtime_measurements_sha1"}, "EPERM", "EACCES"},
		{"unlink", []string{"ima"}, "EPERM", "EACCES"},
		{"rmdir", []string{"integrity"}, "EPERM", "EACCES"},
		{"rmdir", []string{"integrity/ima"}, "EPERM", "EACCES"},
		{"rename", []string{"ima/policy", "ima/policy.old"}, "EPERM", "EACCES"},
		{"rename", []string{"ima/violations", "ima/runtime_measurements_count"}, "EPERM", "EACCES"},
		{"link", []string{"ima/policy", "ima/hard"}, "EPERM", linkNonRoot},
		{"symlink", []string{"/etc/passwd", "ima/ascii_evil"}, "EPERM", "EACCES"},
		{"mkdir", []string{"ima/d"}, "EPERM", "EACCES"},
		{"mknod-fifo", []string{"ima/p"}, "EPERM", "EACCES"},
		{"mknod-reg", []string{"ima/r"}, "EACCES", "EACCES"},
		{"create", []string{"ima/new"}, "EACCES", "EACCES"},
		{"setxattr", []string{"ima/ascii_runtime_measurements_sha256"}, "ENOTSUP", "EACCES"},
		{"removexattr", []string{"ima/policy"}, "ENOTSUP", "EACCES"},
		{"truncate", []string{"ima/binary_runtime_measurements_sha1"}, "EPERM", "EACCES"},
		{"truncate", []string{"ima/runtime_measurements_count"}, "EPERM", "EACCES"},
		{"chmod", []string{"ima/ascii_runtime_measurements_sha1"}, "EPERM", "EPERM"},
		{"chown", []string{"integrity"}, "EPERM", "EPERM"},
	}
}

// attackTree runs every treeAttack through exec (argv → output) under root
// and checks the answers.
func attackTree(t *testing.T, who string, root string, isRoot bool, exec func(argv ...string) (string, error)) {
	t.Helper()
	for _, a := range treeAttacks() {
		argv := []string{a.op}
		for i, p := range a.args {
			if i == 0 && a.op == "symlink" {
				argv = append(argv, p) // the link's target, not in the tree
				continue
			}
			argv = append(argv, root+"/"+p)
		}
		want := a.nonRoot
		if isRoot {
			want = a.root
		}
		out, err := exec(argv...)
		if got := strings.TrimSpace(out); err != nil || got != want {
			t.Errorf("%s: treeop %s: %q, %v; want %s", who, strings.Join(argv, " "), got, err, want)
		}
	}
}

// treeWhole lists the tree through ls (argv prefix runs ls where the tree
// is) and checks nothing is missing or added.
func treeWhole(t *testing.T, who string, root string, ls func(argv ...string) (string, error)) {
	t.Helper()
	want := map[string]string{
		root:                    "ima integrity",
		root + "/integrity":     "ima",
		root + "/integrity/ima": "ascii_runtime_measurements ascii_runtime_measurements_sha1 ascii_runtime_measurements_sha256 binary_runtime_measurements binary_runtime_measurements_sha1 binary_runtime_measurements_sha256 policy quote runtime_measurements_count violations",
	}
	for dir, names := range want {
		out, err := ls("ls", "-1", dir)
		if got := strings.Join(strings.Fields(out), " "); err != nil || got != names {
			t.Errorf("%s: ls %s: %q, %v; want %q", who, dir, got, err, names)
		}
	}
}

// TestAttackUnlinkPolicy: root and uid 1000 in runc containers (default
// capabilities, and a user-namespaced one with CAP_SYS_ADMIN) try every
// change of their tree: unlink of the policy and of a list, rmdir, rename,
// link, symlink, mkdir, mknod, create, xattrs, truncate, chmod, chown. Each
// gets securityfs's errno, the tree stays whole for everyone, and the
// daemon still serves the other container afterwards.
func TestAttackUnlinkPolicy(t *testing.T) {
	d := startDaemon(t)
	plain := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d)})
	userns := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), User: true, Capabilities: []string{"CAP_SYS_ADMIN"}})
	other := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Capabilities: []string{"CAP_SYS_ADMIN"}})
	for _, c := range []*harness.RuncContainer{plain, userns} {
		installTreeop(t, c)
	}
	callers := []struct {
		name string
		c    *harness.RuncContainer
		uid  int
	}{
		{"root (default caps)", plain, 0},
		{"uid 1000", plain, harness.NonRootUID},
		{"root of a user namespace", userns, 0},
		{"uid 1000 of a user namespace", userns, harness.NonRootUID},
	}
	for _, cl := range callers {
		exec := func(argv ...string) (string, error) {
			return cl.c.Exec(cl.uid, append([]string{"/treeop"}, argv...)...)
		}
		attackTree(t, cl.name, sec, cl.uid == 0, exec)
	}
	for _, cl := range callers {
		treeWhole(t, cl.name, sec, func(argv ...string) (string, error) { return cl.c.Exec(0, argv...) })
		if n, err := cl.c.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil || n != "2\n" {
			t.Errorf("%s: count after the attack %q, %v; want 2", cl.name, n, err)
		}
	}
	if n, err := other.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil || n != "2\n" {
		t.Errorf("other container after the attack: %q, %v", n, err)
	}
	if _, err := other.Exec(0, "sh", "-c", "echo 'measure func=BPRM_CHECK' > "+ima+"/policy"); err != nil {
		t.Errorf("other container's policy write after the attack: %v", err)
	}
	if rows := d.ps(t); len(rows) < 4 {
		t.Errorf("ps after the attack: %v", rows)
	}
}

// TestAttackHostViewUnlink: on the host view (--mount), host nobody and
// host root try every change of the tree: securityfs's errnos, the tree
// stays whole, and the containers are still served.
func TestAttackHostViewUnlink(t *testing.T) {
	d := startDaemon(t)
	// startDaemon's directory is 0700: let nobody reach the mount, so
	// that imafs answers, not the directory above it.
	if err := os.Chmod(filepath.Dir(d.hostMnt), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := installTreeop(t, nil)
	c := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d)})
	run := func(prefix ...string) func(argv ...string) (string, error) {
		return func(argv ...string) (string, error) {
			return harness.Run(prefix[0], append(append(prefix[1:], bin), argv...)...)
		}
	}
	attackTree(t, "host nobody", d.hostMnt, false, run("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"))
	attackTree(t, "host root", d.hostMnt, true, run("env"))
	treeWhole(t, "host", d.hostMnt, func(argv ...string) (string, error) { return harness.Run(argv[0], argv[1:]...) })
	if list, err := os.ReadFile(filepath.Join(d.hostMnt, "ima/ascii_runtime_measurements")); err != nil || !strings.Contains(string(list), "boot_aggregate") {
		t.Errorf("host list after the attack: %v", err)
	}
	if n, err := c.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil || n != "2\n" {
		t.Errorf("container after the host attack: %q, %v", n, err)
	}
}

// TestAttackRootReadsListWithoutCaps: root of a default container (no
// CAP_SYS_ADMIN; runc's default capabilities) reads its own lists and
// counters like on the kernel (0440 root:root: DAC, no capability), also in
// a user namespace; uid 1000 is refused; the policy still asks
// CAP_SYS_ADMIN, so root without it can neither write nor read it.
func TestAttackRootReadsListWithoutCaps(t *testing.T) {
	d := startDaemon(t)
	plain := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d)})
	userns := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), User: true})
	admin := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Capabilities: []string{"CAP_SYS_ADMIN"}})
	for _, c := range []*harness.RuncContainer{plain, userns} {
		config, err := os.ReadFile(filepath.Join(c.Bundle, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		list, err := c.Exec(0, "cat", ima+"/ascii_runtime_measurements")
		if err != nil {
			t.Fatalf("root without CAP_SYS_ADMIN: cat list: %v", err)
		}
		checkInitialList(t, list, config)
		for _, f := range []string{"runtime_measurements_count", "violations", "binary_runtime_measurements_sha256"} {
			if _, err := c.Exec(0, "cat", ima+"/"+f); err != nil {
				t.Errorf("root without CAP_SYS_ADMIN: cat %s: %v", f, err)
			}
		}
		if _, err := c.Exec(0, "sh", "-c", "test -r "+ima+"/ascii_runtime_measurements"); err != nil {
			t.Errorf("root without CAP_SYS_ADMIN: test -r list: %v, want readable", err)
		}
		if _, err := c.Exec(harness.NonRootUID, "sh", "-c", "test -r "+ima+"/ascii_runtime_measurements"); err == nil {
			t.Error("uid 1000: test -r list: readable")
		}
		for _, argv := range [][]string{
			{"cat", ima + "/ascii_runtime_measurements"},
			{"cat", ima + "/runtime_measurements_count"},
		} {
			if _, err := c.Exec(harness.NonRootUID, argv...); err == nil || !strings.Contains(err.Error(), "Permission denied") {
				t.Errorf("uid 1000: %q: %v, want Permission denied", argv, err)
			}
		}
		if _, err := c.Exec(0, "sh", "-c", "echo 'measure func=FILE_CHECK' > "+ima+"/policy"); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("root without CAP_SYS_ADMIN writes the policy: %v, want Permission denied", err)
		}
		if _, err := c.Exec(0, "cat", ima+"/policy"); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("root without CAP_SYS_ADMIN reads the policy: %v, want Permission denied", err)
		}
	}
	if row := d.ps(t)[plain.ID]; row.Rules != 0 {
		t.Errorf("policy of the container without CAP_SYS_ADMIN: %d rules, want unchanged (0)", row.Rules)
	}
	if _, err := admin.Exec(0, "sh", "-c", "echo 'measure func=BPRM_CHECK' > "+ima+"/policy"); err != nil {
		t.Errorf("root with CAP_SYS_ADMIN writes its policy: %v", err)
	}
	if n, err := admin.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil || n != "2\n" {
		t.Errorf("other container: %q, %v", n, err)
	}
}

// TestAttackRootReadsListWithoutCapsStrict: with serve --list-read-cap
// sys_admin the operator's stricter rule holds: root without CAP_SYS_ADMIN
// gets EACCES on its lists, root with it reads them.
func TestAttackRootReadsListWithoutCapsStrict(t *testing.T) {
	d := startDaemon(t, "--list-read-cap", "sys_admin")
	plain := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d)})
	admin := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Capabilities: []string{"CAP_SYS_ADMIN"}})
	for _, f := range []string{"ascii_runtime_measurements", "runtime_measurements_count"} {
		if _, err := plain.Exec(0, "cat", ima+"/"+f); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("strict: root without CAP_SYS_ADMIN: cat %s: %v, want Permission denied", f, err)
		}
	}
	if n, err := admin.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil || n != "2\n" {
		t.Errorf("strict: root with CAP_SYS_ADMIN: %q, %v", n, err)
	}
	if out, err := exec.Command(imafsBin, "serve", "--list-read-cap", "dac_override").CombinedOutput(); err == nil || !strings.Contains(string(out), "list-read-cap") {
		t.Errorf("serve --list-read-cap dac_override: %v: %s", err, out)
	}
}

// TestAttackFloodingReaderStarvesNeighbour: 16 readers loop over a large
// list in one container while a quiet container reads its own: every quiet
// read completes, with the right content, while the flood runs, and the
// daemon serves both containers and the host afterwards. (The latency
// figure is bench/'s BenchmarkFloodFairness.)
func TestAttackFloodingReaderStarvesNeighbour(t *testing.T) {
	d := startDaemon(t, "--log-level", "warn")
	flood := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d)})
	quiet := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d)})
	file := filepath.Join(t.TempDir(), "measured")
	if err := os.WriteFile(file, []byte("flood\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pf := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(pf, []byte("measure func=FILE_CHECK mask=MAY_READ\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.imafs("policy", flood.ID, "--set", pf); err != nil {
		t.Fatal(err)
	}
	const entries = 300
	for i := 0; i < entries; i++ {
		if _, err := d.imafs("measure", "--id", flood.ID, "--name", "/usr/lib/flood/lib"+strconv.Itoa(i)+".so", file); err != nil {
			t.Fatal(err)
		}
	}
	want, err := quiet.Exec(0, "cat", ima+"/ascii_runtime_measurements")
	if err != nil {
		t.Fatal(err)
	}
	const seconds = 8
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// 16 loops in the flooding container, each counting its reads.
	script := `end=$(($(date +%s)+` + strconv.Itoa(seconds) + `)); for i in $(seq 16); do
		(n=0; while [ $(date +%s) -lt $end ]; do cat ` + ima + `/ascii_runtime_measurements_sha256 >/dev/null && n=$((n+1)); done; echo $n) &
	done; wait`
	var floodOut string
	var floodErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, err := flood.Command(ctx, 0, "sh", "-c", script).Output()
		floodOut, floodErr = string(out), err
	}()
	time.Sleep(time.Second) // the flood is on
	quietReads := 0
	for start := time.Now(); time.Since(start) < (seconds-2)*time.Second; quietReads++ {
		got, err := quiet.Exec(0, "cat", ima+"/ascii_runtime_measurements")
		if err != nil || got != want {
			t.Fatalf("quiet read %d under the flood: %q, %v", quietReads, got, err)
		}
	}
	wg.Wait()
	if floodErr != nil {
		t.Fatalf("flood: %v: %s", floodErr, floodOut)
	}
	total := 0
	for _, f := range strings.Fields(floodOut) {
		n, _ := strconv.Atoi(f)
		total += n
	}
	if len(strings.Fields(floodOut)) != 16 || total == 0 {
		t.Fatalf("flood readers' counts %q: the flood did not run", floodOut)
	}
	t.Logf("under a flood of %d reads of a %d-entry list: %d quiet reads completed", total, entries+2, quietReads)
	if quietReads < 3 {
		t.Errorf("only %d quiet reads in %d s of flood", quietReads, seconds-2)
	}
	// Everyone is served afterwards.
	if n, err := flood.Exec(0, "cat", ima+"/runtime_measurements_count"); err != nil || n != strconv.Itoa(entries+2)+"\n" {
		t.Errorf("flooding container afterwards: %q, %v", n, err)
	}
	if got, err := quiet.Exec(0, "cat", ima+"/ascii_runtime_measurements"); err != nil || got != want {
		t.Errorf("quiet container afterwards: %q, %v", got, err)
	}
	if _, err := os.ReadFile(filepath.Join(d.hostMnt, "ima/runtime_measurements_count")); err != nil {
		t.Errorf("host view afterwards: %v", err)
	}
}
