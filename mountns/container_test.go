package mountns

import (
	"strings"
	"testing"

	"github.com/imafs/imafs/integration/harness"
)

// securityfsLike is what a container sees at /sys/kernel/security once
// imafs is mounted: go-fuse's tree with /hello.
func checkContainerMount(t *testing.T, pid int, exec func(uid int, args ...string) (string, error)) {
	t.Helper()
	const target = "/sys/kernel/security"
	m := mountHello(t, pid, target, Options{AllowOther: true, Subtype: "imafs-test"})

	for _, uid := range []int{0, 1000} { // allow_other: every uid in the container
		out, err := exec(uid, "cat", target+"/hello")
		if err != nil || out != "hello from imafs\n" {
			t.Fatalf("cat %s/hello as uid %d: %q, %v", target, uid, out, err)
		}
	}
	info, err := exec(0, "cat", "/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(info, "\n") {
		if strings.Contains(l, " "+target+" ") {
			line = l
		}
	}
	if !strings.Contains(line, "fuse.imafs-test") || !strings.Contains(line, "nosuid,nodev,noexec") {
		t.Fatalf("container mountinfo line for %s: %q", target, line)
	}
	if hostHasMount(t, target) {
		t.Fatal("host mount table has the container's mount")
	}
	m.unmount(t)
	if out, err := exec(0, "ls", target); err != nil || strings.Contains(out, "hello") {
		t.Fatalf("after Unmount: ls %s: %q, %v", target, out, err)
	}
}

func TestMountFUSERuncContainer(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts harness.RuncOptions
	}{
		{"plain", harness.RuncOptions{}},
		{"user namespace", harness.RuncOptions{User: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := harness.NewRuncContainer(t, tc.opts)
			checkContainerMount(t, c.Pid, c.Exec)
		})
	}
}

func TestMountFUSEUnshareContainer(t *testing.T) {
	for _, tc := range []struct {
		name string
		user bool
	}{{"busybox chroot", false}, {"busybox chroot, user namespace", true}} {
		t.Run(tc.name, func(t *testing.T) {
			harness.RequireRoot(t)
			root := harness.TempDir(t)
			harness.BusyboxRootfs(t, root)
			// sysfs can only be mounted in a user namespace that owns the
			// network namespace too.
			c := harness.StartUnshare(t, harness.UnshareOptions{Root: root, User: tc.user, Net: tc.user})
			// A chroot has no sysfs: give it one in its own namespace.
			if _, err := c.Exec(0, "mount", "-t", "sysfs", "sysfs", "/sys"); err != nil {
				t.Fatal(err)
			}
			checkContainerMount(t, c.Pid, c.Exec)
		})
	}
}
