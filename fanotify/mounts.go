package fanotify

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountInfo is one line of /proc/PID/mountinfo.
type mountInfo struct {
	ID         int
	Dev        uint64 // unix.Mkdev(major, minor), comparable with Stat_t.Dev
	Root       string // path of the mount's root within its filesystem
	MountPoint string // relative to the reading process's root
	FSType     string
}

// parseMountInfo reads the format of proc(5) mountinfo.
func parseMountInfo(data []byte) ([]mountInfo, error) {
	var out []mountInfo
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+1 >= len(f) {
			return nil, fmt.Errorf("mountinfo line %d: malformed %q", n, sc.Text())
		}
		id, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: mount id %q: %w", n, f[0], err)
		}
		maj, min, ok := strings.Cut(f[2], ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo line %d: device %q", n, f[2])
		}
		out = append(out, mountInfo{
			ID:         id,
			Dev:        unix.Mkdev(uint32(ma), uint32(mi)),
			Root:       unescapeMount(f[3]),
			MountPoint: unescapeMount(f[4]),
			FSType:     f[sep+1],
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMount undoes the kernel's octal escapes (\040 for space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// skipFSTypes are file systems whose files are never IMA subjects here:
// kernel pseudo file systems, and FUSE servers that could deadlock with us
// (imafs itself, lxcfs).
var skipFSTypes = map[string]bool{
	"proc": true, "sysfs": true, "cgroup": true, "cgroup2": true, "devpts": true, "mqueue": true,
	"securityfs": true, "debugfs": true, "tracefs": true, "bpf": true, "fusectl": true,
	"configfs": true, "binfmt_misc": true, "pstore": true, "efivarfs": true, "nsfs": true,
	"autofs": true, "selinuxfs": true, "hugetlbfs": true, "rpc_pipefs": true,
	"fuse.imafs": true, "fuse.lxcfs": true,
}

// hostView is what the engine knows about the host's file systems.
type hostView struct {
	rootDevs map[uint64]bool // st_dev of the host's "/" (ours and pid 1's)
	devs     map[uint64]bool // every device mounted in the host's mount namespace
	types    map[uint64]string
	mounts   []mountInfo // the daemon's (the host's) mount table
}

// readHostView reads the host's mounts. The daemon runs in the host's mount
// namespace (it must, to attach FUSE mounts anyway), so the host is "self";
// pid 1's mounts are added when readable (it may be hidden from us, e.g. in
// a sandbox without ptrace access to pid 1).
func readHostView(proc string) (*hostView, error) {
	var st unix.Stat_t
	if err := unix.Stat(proc+"/self/root", &st); err != nil {
		return nil, fmt.Errorf("host view: stat %s/self/root: %w", proc, err)
	}
	data, err := os.ReadFile(proc + "/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("host view: %w", err)
	}
	ms, err := parseMountInfo(data)
	if err != nil {
		return nil, fmt.Errorf("host view: %s/self/mountinfo: %w", proc, err)
	}
	self := ms
	if data, err := os.ReadFile(proc + "/1/mountinfo"); err == nil {
		if more, err := parseMountInfo(data); err == nil {
			ms = append(ms[:len(ms):len(ms)], more...)
		}
	}
	hv := &hostView{rootDevs: map[uint64]bool{st.Dev: true}, devs: map[uint64]bool{}, types: map[uint64]string{}, mounts: self}
	if unix.Stat(proc+"/1/root", &st) == nil {
		hv.rootDevs[st.Dev] = true
	}
	for _, m := range ms {
		hv.devs[m.Dev] = true
		hv.types[m.Dev] = m.FSType
	}
	return hv, nil
}

// newMounts returns the mounts of a container that has not left the host's
// root yet (an OCI createRuntime hook runs between the runtime's mounts and
// pivot_root): its mount namespace is a copy of the host's plus the
// container's own mounts (rootfs, proc, dev, volumes). A mount is the
// container's own when the host has fewer mounts of the same file system
// root at the same place (a runtime bind-mounts the rootfs onto itself, so
// the copy and the new mount share a mount point: the path then resolves to
// the new one on top).
func newMounts(container, host []mountInfo) []mountInfo {
	type key struct {
		dev         uint64
		root, point string
	}
	count := map[key]int{}
	for _, m := range host {
		count[key{m.Dev, m.Root, m.MountPoint}]++
	}
	var out []mountInfo
	for _, m := range container {
		k := key{m.Dev, m.Root, m.MountPoint}
		if count[k] > 0 {
			count[k]--
			continue
		}
		out = append(out, m)
	}
	return out
}

// markKind is how a container mount is watched.
type markKind int

const (
	markNone       markKind = iota // pseudo file system: not watched
	markMount                      // FAN_MARK_MOUNT on the container's mount
	markFilesystem                 // FAN_MARK_FILESYSTEM on the superblock
)

func (k markKind) String() string {
	return [...]string{"none", "mount", "filesystem"}[k]
}

// classify decides how to watch the container mount m. A superblock gets a
// filesystem mark (which also covers copies of the mount made by
// `unshare -m` in the container) only when it is the container's own: not
// the host's root file system and not mounted in the host's mount namespace
// — except overlay, whose superblocks container runtimes create per
// container (and mount in the host namespace at .../merged). Everything the
// host shares gets mount marks on the container's mounts only, which the
// host's own accesses (through its own mounts) never hit.
func (hv *hostView) classify(m mountInfo) markKind {
	if skipFSTypes[m.FSType] {
		return markNone
	}
	if hv.rootDevs[m.Dev] {
		return markMount
	}
	if hv.devs[m.Dev] && m.FSType != "overlay" {
		return markMount
	}
	return markFilesystem
}

// openInRoot opens path (absolute, as the container sees it) with O_PATH,
// resolved inside the root directory rootFD so that symlinks cannot lead
// out of the container. A mount point may be a file (a file bind mount).
func openInRoot(rootFD int, path string) (int, error) {
	rel := strings.TrimLeft(path, "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(rootFD, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, fmt.Errorf("open %s in container root: %w", path, err)
	}
	return fd, nil
}
