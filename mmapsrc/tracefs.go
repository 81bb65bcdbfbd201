package mmapsrc

import (
	"fmt"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// tracefsDir is where Open mounts tracefs when none is mounted (systemd
// mounts it there too); link.Tracepoint reads the tracepoints' ids there.
const tracefsDir = "/sys/kernel/tracing"

// ensureTracefs mounts tracefs at tracefsDir unless it (or debugfs's
// tracing directory) is mounted already.
func ensureTracefs(log *logrus.Logger) error {
	for _, dir := range []string{tracefsDir, "/sys/kernel/debug/tracing"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.TRACEFS_MAGIC {
			return nil
		}
	}
	if err := unix.Mount("tracefs", tracefsDir, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mmap source: mount tracefs on %s: %w", tracefsDir, err)
	}
	log.WithField("dir", tracefsDir).Info("mmap source: mounted tracefs for the syscall tracepoints")
	return nil
}
