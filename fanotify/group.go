package fanotify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Event masks the engine asks for.
const (
	maskExec       = unix.FAN_OPEN_EXEC_PERM
	maskOpen       = unix.FAN_OPEN_PERM
	maskCloseWrite = unix.FAN_CLOSE_WRITE
)

// group is one fanotify notification group (one per container).
type group struct {
	f  *os.File // the fanotify fd, non-blocking, served by Go's poller
	mu sync.Mutex
}

// newGroup opens a permission-class fanotify group. FAN_UNLIMITED_QUEUE:
// a permission event that overflows a bounded kernel queue is allowed
// without asking us, which would bypass appraisal. FAN_REPORT_TID: the
// event carries the thread id, so /proc/TID/syscall shows the open's flags.
func newGroup() (*group, error) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|
		unix.FAN_UNLIMITED_QUEUE|unix.FAN_UNLIMITED_MARKS|unix.FAN_REPORT_TID,
		unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC|unix.O_NOATIME)
	if err != nil {
		return nil, fmt.Errorf("fanotify_init: %w", err)
	}
	return &group{f: os.NewFile(uintptr(fd), "fanotify")}, nil
}

func (g *group) fd() int { return int(g.f.Fd()) }

// markFilesystem marks the whole superblock of fd (an O_PATH fd: see
// markPath).
func (g *group) markFilesystem(fd int, mask uint64) error {
	dirfd, path := markPath(fd)
	return g.mark(unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, mask, dirfd, path)
}

// markMount marks only the mount of fd: a directory, or a file that is a
// mount point of its own (the file bind mounts container engines make for
// /etc/resolv.conf, /etc/hosts, /etc/hostname, /run/.containerenv).
func (g *group) markMount(fd int, mask uint64) error {
	dirfd, path := markPath(fd)
	return g.mark(unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, mask, dirfd, path)
}

// markPath names the object of the O_PATH fd for fanotify_mark, which
// rejects O_PATH fds without a path: "." under a directory; for any other
// file the fd's magic link /proc/self/fd/N (followed by the mark's lookup
// to the very mount and dentry the fd holds).
func markPath(fd int) (int, string) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd)
	}
	return fd, "."
}

// ignore adds an ignore mark for mask on the inode of fd. Without
// FAN_MARK_IGNORED_SURV_MODIFY the kernel clears it on the first
// modification of the file, so a changed file is seen again.
// FAN_MARK_EVICTABLE (Linux 5.19): the mark does not pin the inode in
// memory; when the inode is evicted the mark goes with it and the next
// event is answered from the engine's cache.
func (g *group) ignore(fd int, mask uint64) error {
	err := g.mark(unix.FAN_MARK_ADD|unix.FAN_MARK_IGNORED_MASK|unix.FAN_MARK_EVICTABLE, mask, fd, "")
	if errors.Is(err, unix.EINVAL) {
		// Older kernels: a pinning mark (bounded by the caller).
		err = g.mark(unix.FAN_MARK_ADD|unix.FAN_MARK_IGNORED_MASK, mask, fd, "")
	}
	return err
}

// flushInodeMarks removes every inode mark of the group: our ignore marks.
func (g *group) flushInodeMarks() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := unix.FanotifyMark(g.fd(), unix.FAN_MARK_FLUSH, 0, unix.AT_FDCWD, ""); err != nil {
		return fmt.Errorf("fanotify_mark flush: %w", err)
	}
	return nil
}

func (g *group) mark(flags uint, mask uint64, dirfd int, path string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := unix.FanotifyMark(g.fd(), flags, mask, dirfd, path); err != nil {
		return fmt.Errorf("fanotify_mark(flags %#x, mask %#x): %w", flags, mask, err)
	}
	return nil
}

// respond answers a permission event.
func (g *group) respond(fd int32, allow bool) error {
	resp := unix.FanotifyResponse{Fd: fd, Response: unix.FAN_DENY}
	if allow {
		resp.Response = unix.FAN_ALLOW
	}
	buf := (*[unsafe.Sizeof(resp)]byte)(unsafe.Pointer(&resp))[:]
	if _, err := g.f.Write(buf); err != nil {
		return fmt.Errorf("fanotify respond fd %d: %w", fd, err)
	}
	return nil
}

func (g *group) close() error { return g.f.Close() }

// rawEvent is one event read from the group.
type rawEvent struct {
	Mask uint64
	Fd   int32 // FAN_NOFD for queue overflow
	TID  int32
}

const metadataLen = int(unsafe.Sizeof(unix.FanotifyEventMetadata{}))

// errShortEvent reports a buffer that does not hold a whole event.
var errShortEvent = errors.New("short fanotify event")

// parseEvents decodes the events in buf (whole events only, as the kernel
// never splits one across reads).
func parseEvents(buf []byte, out []rawEvent) ([]rawEvent, error) {
	for len(buf) > 0 {
		if len(buf) < metadataLen {
			return out, fmt.Errorf("%w: %d bytes left", errShortEvent, len(buf))
		}
		evLen := binary.NativeEndian.Uint32(buf[0:4])
		vers := buf[4]
		if vers != unix.FANOTIFY_METADATA_VERSION {
			return out, fmt.Errorf("fanotify metadata version %d, want %d", vers, unix.FANOTIFY_METADATA_VERSION)
		}
		if int(evLen) < metadataLen || int(evLen) > len(buf) {
			return out, fmt.Errorf("%w: event_len %d of %d", errShortEvent, evLen, len(buf))
		}
		out = append(out, rawEvent{
			Mask: binary.NativeEndian.Uint64(buf[8:16]),
			Fd:   int32(binary.NativeEndian.Uint32(buf[16:20])),
			TID:  int32(binary.NativeEndian.Uint32(buf[20:24])),
		})
		buf = buf[evLen:]
	}
	return out, nil
}
