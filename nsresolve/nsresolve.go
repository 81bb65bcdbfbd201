package nsresolve

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// NSID identifies a namespace by its nsfs device and inode.
//
// An NSID is only a name: it designates one namespace only while something
// holds that namespace open (an nsfs fd, or a live task in it). See Pin.
type NSID struct {
	Dev uint64
	Ino uint64
}

// String renders the id like the kernel's ns links ("4026531836" with the
// device in hex before it: "0x4:4026531836").
func (id NSID) String() string { return fmt.Sprintf("%#x:%d", id.Dev, id.Ino) }

// IsZero reports whether id is the zero NSID (no namespace).
func (id NSID) IsZero() bool { return id == NSID{} }

// Caller is what a FUSE request's (or fanotify event's) pid resolves to.
type Caller struct {
	TID, PID             int    // thread id as in the request, and its thread group id (host pid ns)
	PidNS                NSID   // the caller's own pid namespace (not pid_for_children)
	UserNS               NSID   // the caller's user namespace
	MntNS                NSID   // the caller's mount namespace
	UID, EUID, GID, EGID uint32 // host (initial user ns) ids from /proc/TID/status
	CapEff               uint64 // effective capabilities, relative to UserNS
}

// CapSysAdmin is the bit of CAP_SYS_ADMIN in Caller.CapEff.
const CapSysAdmin = uint64(1) << unix.CAP_SYS_ADMIN

// ErrGone is wrapped by errors about a task that exited (or whose pid now
// names another task) while it was being resolved.
var ErrGone = errors.New("task gone")

// Caller resolves the thread id tid, as seen from the daemon's (host) pid
// namespace, to its thread group, namespaces and credentials.
//
// The number tid is looked up once; everything else is read through a handle
// bound to that task's struct pid (a thread pidfd and its /proc/TID
// directory, or an open /proc/TID directory alone on kernels without
// PIDFD_GET_INFO), so every read either describes the same task or fails
// with an error wrapping ErrGone; it never describes another task that
// reused the number. (The one unavoidable window is between the kernel
// queueing the request and that lookup; but a FUSE requester is blocked in
// the kernel until answered, so its tid can't be freed in between unless
// it is SIGKILLed, and then nobody reads the answer.)
//
// The handles are cached per tid (the task cache): a later resolution of
// the same tid first checks, through the cached pidfd, that its task is
// alive (then the number still names it) and reads what may have changed
// (ids, capabilities, user and mount namespaces) afresh; only the pid
// namespace, fixed for a task's life, is kept. A dead task's entry is
// dropped and the number looked up again.
func (r *Resolver) Caller(tid int) (*Caller, error) { return r.CallerWith(tid, WantAll) }

// CallerWith is Caller filling CapEff and MntNS only when want asks for
// them (zero otherwise): a list read needs neither, and each is a system
// call.
func (r *Resolver) CallerWith(tid int, want Want) (*Caller, error) {
	return r.caller(tid, want, nil)
}

// CallerOfRequest is CallerWith for a FUSE request, whose header carries
// the caller's fsuid and fsgid (host ids): UID and EUID are the request's
// uid, GID and EGID its gid, the ids the kernel's own permission checks
// use, taken from there instead of being read from the task. A resolution
// from the task cache then costs one system call (two with WantCaps or
// WantMntNS each). Kernels without PIDFD_GET_INFO read the task's ids from
// /proc as Caller does.
func (r *Resolver) CallerOfRequest(tid int, ids Ids, want Want) (*Caller, error) {
	return r.caller(tid, want, &ids)
}

func (r *Resolver) caller(tid int, want Want, ids *Ids) (*Caller, error) {
	if tid <= 0 {
		return nil, fmt.Errorf("resolve caller tid %d: no such task (pid 0 is a kernel-internal request such as RELEASE)", tid)
	}
	if !r.procOnly.Load() {
		c, err := r.callerCached(tid, want, ids)
		if !errors.Is(err, errNoPidfdInfo) {
			return c, err
		}
		r.procOnly.Store(true) // old kernel: use /proc from now on
	}
	c, err := r.callerProc(tid)
	if err == nil {
		if want&WantCaps == 0 {
			c.CapEff = 0
		}
		if want&WantMntNS == 0 {
			c.MntNS = NSID{}
		}
	}
	return c, err
}

// callerProc is Caller through /proc/TID/{status,ns/*}.
func (r *Resolver) callerProc(tid int) (*Caller, error) {
	dir, err := openProcDir(tid)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)

	c := &Caller{TID: tid}
	var buf [4096]byte
	status, err := readAt(dir, "status", buf[:])
	if err != nil {
		return nil, fmt.Errorf("resolve caller tid %d: %w", tid, err)
	}
	if err := parseStatus(status, c); err != nil {
		return nil, fmt.Errorf("resolve caller tid %d: /proc/%d/status: %w", tid, tid, err)
	}
	for _, ns := range []struct {
		name string
		dst  *NSID
	}{{"ns/pid", &c.PidNS}, {"ns/user", &c.UserNS}, {"ns/mnt", &c.MntNS}} {
		if *ns.dst, err = statAt(dir, ns.name); err != nil {
			return nil, fmt.Errorf("resolve caller tid %d: %w", tid, err)
		}
	}
	// Make sure the ancestry of the pid namespace is cached while we can still
	// open it through this very directory. A failure here is not fatal: Owner
	// retries through /proc/TID.
	r.cacheFromDir(dir, c.PidNS)
	return c, nil
}

// openProcDir opens /proc/TID (or a directory below it, sub). For a thread
// that is not a group leader the lookup still works (the directory is
// hidden from readdir only).
func openProcDir(tid int, sub ...string) (int, error) {
	path := "/proc/" + strconv.Itoa(tid)
	for _, s := range sub {
		path += "/" + s
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return -1, fmt.Errorf("open %s: %w (%w)", path, ErrGone, err)
		}
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	return fd, nil
}

// readAt reads the file name below the directory dir into buf.
func readAt(dir int, name string, buf []byte) ([]byte, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, procErr(dir, "open", name, err)
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, procErr(dir, "read", name, err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	if n == len(buf) {
		return nil, fmt.Errorf("read %s: larger than %d bytes", name, len(buf))
	}
	return buf[:n], nil
}

// statAt stats the namespace link name below dir and returns its NSID.
func statAt(dir int, name string) (NSID, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, 0); err != nil {
		return NSID{}, procErr(dir, "stat", name, err)
	}
	return NSID{Dev: st.Dev, Ino: st.Ino}, nil
}

func procErr(dir int, op, name string, err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || (errors.Is(err, unix.EACCES) && taskGone(dir)) {
		return fmt.Errorf("%s %s: %w (%w)", op, name, ErrGone, err)
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}

// taskGone reports whether the task of the /proc/TID directory dir has
// been reaped. A namespace link of a reaped task answers EACCES, not ENOENT
// (proc_ns_get_link finds no task); its other entries answer ENOENT.
func taskGone(dir int) bool {
	var st unix.Stat_t
	err := unix.Fstatat(dir, "stat", &st, 0)
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// parseStatus fills PID (Tgid), ids and CapEff from /proc/TID/status.
func parseStatus(b []byte, c *Caller) error {
	var have int
	for len(b) > 0 {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		key, val, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		val = bytes.TrimSpace(val)
		switch string(key) {
		case "Tgid":
			n, err := strconv.Atoi(string(val))
			if err != nil {
				return fmt.Errorf("Tgid %q: %w", val, err)
			}
			c.PID = n
			have |= 1
		case "Uid", "Gid":
			f := bytes.Fields(val)
			if len(f) < 2 {
				return fmt.Errorf("%s %q: want 4 fields", key, val)
			}
			real, err1 := strconv.ParseUint(string(f[0]), 10, 32)
			eff, err2 := strconv.ParseUint(string(f[1]), 10, 32)
			if err := errors.Join(err1, err2); err != nil {
				return fmt.Errorf("%s %q: %w", key, val, err)
			}
			if key[0] == 'U' {
				c.UID, c.EUID = uint32(real), uint32(eff)
				have |= 2
			} else {
				c.GID, c.EGID = uint32(real), uint32(eff)
				have |= 4
			}
		case "CapEff":
			n, err := strconv.ParseUint(string(val), 16, 64)
			if err != nil {
				return fmt.Errorf("CapEff %q: %w", val, err)
			}
			c.CapEff = n
			have |= 8
		}
	}
	if have != 15 {
		return fmt.Errorf("missing Tgid, Uid, Gid or CapEff (have mask %#x)", have)
	}
	return nil
}

// mapUp translates a uid of the reader's (host) user namespace into the
// namespace whose uid_map text is m ("inside outside count" lines, outside
// relative to the reader). ok=false when it is not mapped.
func mapUp(m []byte, host uint32) (uint32, bool, error) {
	sc := bufio.NewScanner(bytes.NewReader(m))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return 0, false, fmt.Errorf("line %q: want 3 fields", sc.Bytes())
		}
		var v [3]uint64
		for i := range f {
			n, err := strconv.ParseUint(string(f[i]), 10, 32)
			if err != nil {
				return 0, false, fmt.Errorf("line %q: %w", sc.Bytes(), err)
			}
			v[i] = n
		}
		inside, outside, count := v[0], v[1], v[2]
		if uint64(host) >= outside && uint64(host) < outside+count {
			return uint32(inside + uint64(host) - outside), true, nil
		}
	}
	return 0, false, sc.Err()
}
