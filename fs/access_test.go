package fs

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
)

func TestParseListReadCap(t *testing.T) {
	for in, want := range map[string]ListReadRule{"": ListReadRoot, "none": ListReadRoot, "sys_admin": ListReadSysAdmin, "CAP_SYS_ADMIN": ListReadSysAdmin} {
		if got, err := ParseListReadCap(in); err != nil || got != want {
			t.Errorf("ParseListReadCap(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseListReadCap("dac_override"); err == nil {
		t.Error("ParseListReadCap(dac_override): no error")
	}
}

// TestListReadRule: the lists and counters follow the kernel's DAC rule
// (uid 0 of the view, no capability) by default and ask CAP_SYS_ADMIN too
// with ListReadSysAdmin; non-root is refused either way, and the policy
// keeps asking CAP_SYS_ADMIN.
func TestListReadRule(t *testing.T) {
	needRoot(t)
	noAdmin := []string{"setpriv", "--inh-caps", "-sys_admin", "--bounding-set", "-sys_admin"}
	nonRoot := []string{"setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups"}
	for _, rule := range []ListReadRule{ListReadRoot, ListReadSysAdmin} {
		fx := mountWith(t, imans.Options{}, Options{ListRead: rule}, nil)
		reg, dir := fx.reg, fx.dir
		pid := harness.StartSleeper(t).Pid
		ns, err := reg.Attach("c", pid, nil)
		if err != nil {
			t.Fatal(err)
		}
		strict := rule == ListReadSysAdmin
		ima := filepath.Join(dir, "ima")
		tests := []struct {
			name   string
			pid    int
			prefix []string
			file   string
			ok     bool
		}{
			{"host root, list", 0, nil, "ascii_runtime_measurements", true},
			{"host root without CAP_SYS_ADMIN, list", 0, noAdmin, "ascii_runtime_measurements", !strict},
			{"host root without CAP_SYS_ADMIN, count", 0, noAdmin, "runtime_measurements_count", !strict},
			{"host root without CAP_SYS_ADMIN, policy", 0, noAdmin, "policy", false},
			{"host uid 1000, list", 0, nonRoot, "ascii_runtime_measurements", false},
			{"container root, list", pid, nil, "binary_runtime_measurements_sha256", true},
			{"container root without CAP_SYS_ADMIN, list", pid, noAdmin, "ascii_runtime_measurements_sha256", !strict},
			{"container root without CAP_SYS_ADMIN, violations", pid, noAdmin, "violations", !strict},
			{"container root without CAP_SYS_ADMIN, policy", pid, noAdmin, "policy", false},
			{"container uid 1000, list", pid, nonRoot, "ascii_runtime_measurements", false},
			{"container uid 1000, count", pid, nonRoot, "runtime_measurements_count", false},
		}
		for _, tc := range tests {
			argv := append(append([]string{}, tc.prefix...), "cat", filepath.Join(ima, tc.file))
			_, err := run(t, tc.pid, argv...)
			if tc.ok && err != nil {
				t.Errorf("rule %d: %s: %v, want it read", rule, tc.name, err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "Permission denied")) {
				t.Errorf("rule %d: %s: %v, want Permission denied", rule, tc.name, err)
			}
		}
		// access(2) (test -r) of a list or counter answers as an open
		// would. (The policy's is DAC alone, as the kernel's: its
		// capability check is at open.)
		for _, tc := range tests {
			if tc.file == "policy" {
				continue
			}
			argv := append(append([]string{}, tc.prefix...), "sh", "-c", `test -r "$0"`, filepath.Join(ima, tc.file))
			if _, err := run(t, tc.pid, argv...); (err == nil) != tc.ok {
				t.Errorf("rule %d: %s: test -r: %v, want readable %v", rule, tc.name, err, tc.ok)
			}
		}
		if _, err := run(t, pid, "sh", "-c", `test -w "$0"`, filepath.Join(ima, "violations")); err == nil {
			t.Errorf("rule %d: test -w violations: writable", rule)
		}
		if strict {
			continue
		}
		// sendfile(2) needs the caller's own size: root without the
		// capability gets it too.
		want := render(ns.List, measurelog.ASCII, measurelog.SHA1)
		argv := append(append([]string{}, noAdmin...), "busybox", "cat", filepath.Join(ima, "ascii_runtime_measurements"))
		if got, err := run(t, pid, argv...); err != nil || got != want {
			t.Errorf("busybox cat by container root without CAP_SYS_ADMIN: %q, %v; want %q", got, err, want)
		}
	}
}
