package mountns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

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
