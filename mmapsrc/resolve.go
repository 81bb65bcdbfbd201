package mmapsrc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// resolve opens the mapped file of ev: the map_files entry of the mapping
// that holds ev.Addr, or (an mmap without MAP_FIXED, Addr 0: reported
// before the kernel chose the address) of a mapping of ev's inode (valid
// as long as the mapping exists), else for mmap the descriptor it was
// mapped from (valid until the task closes it, and checked, as the number
// may be reused), else (Addr 0: the mmap may have completed and the task
// closed the descriptor meanwhile) the mappings once more. Each is
// checked against the event's device and inode.
func (s *Source) resolve(ev *Event) {
	f, err := s.openMapFile(ev)
	if err != nil && ev.Kind == Mmap && ev.Fd >= 0 {
		var ferr error
		if f, ferr = s.openChecked(ev, fmt.Sprintf("%s/%d/fd/%d", s.opts.Proc, ev.Tid, ev.Fd)); ferr == nil {
			err = nil
		} else if ev.Addr == 0 {
			var merr error
			if f, merr = s.openMapFile(ev); merr == nil {
				err = nil
			} else {
				err = fmt.Errorf("%w; %w; %w", err, ferr, merr)
			}
		} else {
			err = fmt.Errorf("%w; %w", err, ferr)
		}
	}
	if err != nil {
		ev.Err = fmt.Errorf("pid %d: open mapped file %d:%d: %w", ev.Pid, ev.Dev, ev.Ino, err)
		return
	}
	ev.File = f
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) == nil {
		ev.Changed = st.Size != ev.Stamp.Size ||
			st.Mtim.Sec != ev.Stamp.Mtime.Unix() || st.Mtim.Nsec != int64(ev.Stamp.Mtime.Nanosecond()) ||
			st.Ctim.Sec != ev.Stamp.Ctime.Unix() || st.Ctim.Nsec != int64(ev.Stamp.Ctime.Nanosecond())
	}
	ev.Path = s.taskPath(ev.Pid, f)
}

// openMapFile opens /proc/TID/map_files/START-END of the mapping that
// holds ev.Addr, or with Addr 0 of the first mapping of ev.Ino (as
// /proc/TID/maps lists them now).
func (s *Source) openMapFile(ev *Event) (*os.File, error) {
	name, err := s.vmaName(ev.Tid, ev.Addr, ev.Ino)
	if err != nil {
		return nil, err
	}
	return s.openChecked(ev, fmt.Sprintf("%s/%d/map_files/%s", s.opts.Proc, ev.Tid, name))
}

// vmaName finds the "start-end" of the mapping of task tid holding addr,
// or (addr 0) mapping inode ino.
func (s *Source) vmaName(tid int, addr, ino uint64) (string, error) {
	f, err := os.Open(fmt.Sprintf("%s/%d/maps", s.opts.Proc, tid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if addr == 0 {
			// start-end perms offset dev inode path
			if f := strings.Fields(sc.Text()); len(f) >= 5 && f[4] == strconv.FormatUint(ino, 10) {
				return f[0], nil
			}
			continue
		}
		rng, _, _ := strings.Cut(sc.Text(), " ")
		lo, hi, ok := strings.Cut(rng, "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && start <= addr && addr < end {
			return rng, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if addr == 0 {
		return "", fmt.Errorf("no mapping of inode %d in %s: %w", ino, f.Name(), os.ErrNotExist)
	}
	return "", fmt.Errorf("no mapping at %#x in %s: %w", addr, f.Name(), os.ErrNotExist)
}

var errOtherFile = errors.New("another file")

// openChecked opens path read-only and checks it is ev's file.
func (s *Source) openChecked(ev *Event, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) { // O_NOATIME on a file we do not own
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Dev != ev.Dev || st.Ino != ev.Ino {
		f.Close()
		return nil, fmt.Errorf("%s is %d:%d: %w", path, st.Dev, st.Ino, errOtherFile)
	}
	return f, nil
}

// taskPath is f's path as task pid sees it: the path from the daemon's
// root with the task's root (/proc/PID/root) cut off the front.
func (s *Source) taskPath(pid int, f *os.File) string {
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return ""
	}
	root, err := os.Readlink(fmt.Sprintf("%s/%d/root", s.opts.Proc, pid))
	if err != nil || root == "/" {
		return p
	}
	if rest, ok := strings.CutPrefix(p, root); ok && strings.HasPrefix(rest, "/") {
		return rest
	}
	return p
}
