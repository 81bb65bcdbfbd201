package fanotify

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/policy"
)

func TestParseMountInfo(t *testing.T) {
	data := []byte(`22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:45 /lower\040dir /var/lib/x\040y rw - overlay overlay rw,lowerdir=/a
41 22 0:46 / /proc rw,nosuid - proc proc rw
`)
	ms, err := parseMountInfo(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("%d mounts", len(ms))
	}
	if ms[0].Dev != unix.Mkdev(254, 0) || ms[0].MountPoint != "/" || ms[0].FSType != "ext4" {
		t.Errorf("root: %+v", ms[0])
	}
	if ms[1].Root != "/lower dir" || ms[1].MountPoint != "/var/lib/x y" || ms[1].FSType != "overlay" || ms[1].ID != 40 {
		t.Errorf("overlay: %+v", ms[1])
	}
	for _, bad := range []string{"x 1 0:1 / / rw - tmpfs t rw\n", "1 1 01 / / rw - tmpfs t rw\n", "1 1 0:1 / / rw\n", "1 1 0:1 / / rw -\n"} {
		if _, err := parseMountInfo([]byte(bad)); err == nil {
			t.Errorf("parseMountInfo(%q): no error", bad)
		}
	}
}

func TestClassify(t *testing.T) {
	root := unix.Mkdev(254, 0)
	hostTmp := unix.Mkdev(0, 30)
	hostOverlay := unix.Mkdev(0, 31)
	hv := &hostView{rootDevs: map[uint64]bool{root: true}, devs: map[uint64]bool{root: true, hostTmp: true, hostOverlay: true}}
	for _, tc := range []struct {
		m    mountInfo
		want markKind
	}{
		{mountInfo{Dev: root, FSType: "ext4"}, markMount},                    // host "/": never a filesystem mark
		{mountInfo{Dev: root, FSType: "overlay"}, markMount},                 // whatever the type
		{mountInfo{Dev: hostTmp, FSType: "tmpfs"}, markMount},                // host-visible volume
		{mountInfo{Dev: hostOverlay, FSType: "overlay"}, markFilesystem},     // runtime overlay rootfs
		{mountInfo{Dev: unix.Mkdev(0, 99), FSType: "tmpfs"}, markFilesystem}, // container's own
		{mountInfo{Dev: unix.Mkdev(0, 98), FSType: "proc"}, markNone},
		{mountInfo{Dev: unix.Mkdev(0, 97), FSType: "fuse.imafs"}, markNone},
	} {
		if got := hv.classify(tc.m); got != tc.want {
			t.Errorf("classify(%+v) = %s, want %s", tc.m, got, tc.want)
		}
	}
}

func TestStripRoot(t *testing.T) {
	for _, tc := range []struct{ p, root, want string }{
		{"/bin/sh", "/", "/bin/sh"},
		{"/tmp/c1/root/bin/sh", "/tmp/c1/root", "/bin/sh"},
		{"/tmp/c1/root", "/tmp/c1/root", "/"},
		{"/tmp/c1/rootx/bin/sh", "/tmp/c1/root", "/tmp/c1/rootx/bin/sh"},
		{"/elsewhere/f", "/tmp/c1/root", "/elsewhere/f"},
		{"/tmp/c1/root/a (deleted)", "/tmp/c1/root/", "/a (deleted)"},
	} {
		if got := stripRoot(tc.p, tc.root); got != tc.want {
			t.Errorf("stripRoot(%q, %q) = %q, want %q", tc.p, tc.root, got, tc.want)
		}
	}
}

func TestMaskOf(t *testing.T) {
	for _, tc := range []struct {
		flags uint64
		want  policy.Mask
	}{
		{unix.O_RDONLY, policy.MayRead},
		{unix.O_WRONLY | unix.O_CREAT, policy.MayWrite},
		{unix.O_RDWR, policy.MayRead | policy.MayWrite},
		{unix.O_WRONLY | unix.O_APPEND, policy.MayWrite | policy.MayAppend},
		{unix.O_RDONLY | unix.O_TRUNC, policy.MayRead | policy.MayWrite},
	} {
		if got := maskOf(tc.flags); got != tc.want {
			t.Errorf("maskOf(%#o) = %d, want %d", tc.flags, got, tc.want)
		}
	}
}

// TestOpenFlagsOfSelf reads the flags of an open a thread of ours is
// blocked in: a FIFO open blocks until a writer comes.
func TestOpenFlagsOfSelf(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tidc := make(chan int)
	done := make(chan error)
	go func() {
		// A FIFO open for read blocks until a writer opens it.
		runtime.LockOSThread()
		tidc <- unix.Gettid()
		f, err := os.OpenFile(fifo, os.O_RDONLY, 0)
		if err == nil {
			f.Close()
		}
		done <- err
	}()
	tid := <-tidc
	var flags uint64
	var ok bool
	for i := 0; i < 200 && !ok; i++ {
		flags, ok = openFlags("/proc", tid)
		if !ok {
			unix.Nanosleep(&unix.Timespec{Nsec: 5e6}, nil)
		}
	}
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	<-done
	if !ok {
		t.Skip("could not catch the thread in its open call")
	}
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_CLOEXEC == 0 {
		t.Fatalf("flags %#o, want O_RDONLY|O_CLOEXEC", flags)
	}
}

func TestParseEvents(t *testing.T) {
	ev := func(mask uint64, fd, pid int32) []byte {
		b := make([]byte, metadataLen)
		binary.NativeEndian.PutUint32(b[0:], uint32(metadataLen))
		b[4] = unix.FANOTIFY_METADATA_VERSION
		binary.NativeEndian.PutUint16(b[6:], uint16(metadataLen))
		binary.NativeEndian.PutUint64(b[8:], mask)
		binary.NativeEndian.PutUint32(b[16:], uint32(fd))
		binary.NativeEndian.PutUint32(b[20:], uint32(pid))
		return b
	}
	if metadataLen != int(unsafe.Sizeof(unix.FanotifyEventMetadata{})) || metadataLen != 24 {
		t.Fatalf("metadata length %d", metadataLen)
	}
	buf := append(ev(unix.FAN_OPEN_EXEC_PERM, 7, 100), ev(unix.FAN_OPEN_PERM, 8, 101)...)
	got, err := parseEvents(buf, nil)
	if err != nil || len(got) != 2 || got[0] != (rawEvent{unix.FAN_OPEN_EXEC_PERM, 7, 100}) || got[1] != (rawEvent{unix.FAN_OPEN_PERM, 8, 101}) {
		t.Fatalf("parseEvents: %+v, %v", got, err)
	}
	if _, err := parseEvents(buf[:30], nil); err == nil {
		t.Error("torn event: no error")
	}
	bad := ev(unix.FAN_OPEN_PERM, 1, 1)
	bad[4] = 2
	if _, err := parseEvents(bad, nil); err == nil {
		t.Error("old metadata version: no error")
	}
	short := ev(unix.FAN_OPEN_PERM, 1, 1)
	binary.NativeEndian.PutUint32(short[0:], 8)
	if _, err := parseEvents(short, nil); err == nil {
		t.Error("event_len below metadata size: no error")
	}
}

func TestIDMap(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "map")
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	m, err := readIDMap(write("         0          0 4294967295\n"))
	if err != nil || m != nil || m.toNS(1234) != 1234 {
		t.Fatalf("initial map: %v %v", m, err)
	}
	m, err = readIDMap(write("0 100000 65536\n65536 5000 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[uint32]uint32{100000: 0, 100005: 5, 5000: 65536, 0: overflowID, 165536: overflowID} {
		if got := m.toNS(host); got != want {
			t.Errorf("toNS(%d) = %d, want %d", host, got, want)
		}
	}
	if _, err := readIDMap(write("0 1\n")); err == nil {
		t.Error("malformed map: no error")
	}
}

func TestNewMounts(t *testing.T) {
	host := []mountInfo{
		{ID: 1, Dev: 1, Root: "/", MountPoint: "/"},
		{ID: 2, Dev: 2, Root: "/", MountPoint: "/proc"},
		{ID: 3, Dev: 3, Root: "/", MountPoint: "/tmp/b/rootfs"}, // the test's tmpfs
	}
	ctr := []mountInfo{
		{ID: 11, Dev: 1, Root: "/", MountPoint: "/"},             // copies of the host's
		{ID: 12, Dev: 2, Root: "/", MountPoint: "/proc"},         //
		{ID: 13, Dev: 3, Root: "/", MountPoint: "/tmp/b/rootfs"}, //
		{ID: 14, Dev: 3, Root: "/", MountPoint: "/tmp/b/rootfs"}, // runtime's bind of rootfs onto itself
		{ID: 15, Dev: 9, Root: "/", MountPoint: "/tmp/b/rootfs/proc"},
	}
	got := newMounts(ctr, host)
	if len(got) != 2 || got[0].ID != 14 || got[1].ID != 15 {
		t.Fatalf("newMounts = %+v, want mounts 14 and 15", got)
	}
}
