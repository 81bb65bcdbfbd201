package mountns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// TracefsDir is where EnsureTracefs mounts tracefs when none is mounted
// (systemd mounts it there too); cilium/ebpf's link.Tracepoint reads the
// tracepoints' ids there.
const TracefsDir = "/sys/kernel/tracing"

// EnsureTracefs mounts tracefs at TracefsDir unless it (or debugfs's
// tracing directory) is mounted already. It reports whether it mounted.
func EnsureTracefs() (mounted bool, err error) {
	for _, dir := range []string{TracefsDir, "/sys/kernel/debug/tracing"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.TRACEFS_MAGIC {
			return false, nil
		}
	}
	if err := unix.Mount("tracefs", TracefsDir, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return false, fmt.Errorf("mount tracefs on %s: %w", TracefsDir, err)
	}
	return true, nil
}

// ReadSecurityfs reads the securityfs file name (e.g. "lsm") from
// /sys/kernel/security, or, when securityfs is not mounted there, from a
// securityfs mounted on a temporary directory for the read and detached
// after it.
func ReadSecurityfs(name string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join("/sys/kernel/security", name))
	if !errors.Is(err, os.ErrNotExist) {
		return data, err
	}
	dir, err := os.MkdirTemp("", "imafs-securityfs-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(dir)
	if err := unix.Mount("securityfs", dir, "securityfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount securityfs: %w", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	return os.ReadFile(filepath.Join(dir, name))
}
