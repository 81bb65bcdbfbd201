package fanotify

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// openForRead reports whether a process other than this one holds the file
// (dev, ino) open read-only: the kernel's i_readcount, which
// ima_rdwr_violation_check consults on a write open. It walks proc's
// /proc/PID/fd, so it is kept for the rare write open of a measured file.
// The daemon's own descriptors (event fds, hashing) do not count.
func openForRead(proc string, dev, ino uint64) bool {
	pids, err := os.ReadDir(proc)
	if err != nil {
		return false
	}
	self := os.Getpid()
	for _, p := range pids {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		dir := proc + "/" + p.Name()
		fds, err := os.ReadDir(dir + "/fd")
		if err != nil {
			continue // gone, or a kernel thread
		}
		for _, fd := range fds {
			var st unix.Stat_t
			if unix.Stat(dir+"/fd/"+fd.Name(), &st) != nil || st.Dev != dev || st.Ino != ino {
				continue
			}
			if flags, ok := fdFlags(dir + "/fdinfo/" + fd.Name()); ok && flags&unix.O_ACCMODE == unix.O_RDONLY {
				return true
			}
		}
	}
	return false
}

// fdFlags reads the open flags ("flags:\t0100000", octal) of a
// /proc/PID/fdinfo/N file.
func fdFlags(path string) (int, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			return int(n), err == nil
		}
	}
	return 0, false
}
