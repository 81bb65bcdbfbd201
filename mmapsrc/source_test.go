package mmapsrc_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/mmapsrc"
)

// Every way a task maps a library executable is reported once per mount
// namespace, with the task's ids, the file's dev/ino/path and its content.
func TestReportsExecMappingOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cmds     []string // %s: the library
		kind     mmapsrc.Kind
		otherPid bool // reported for a child of the mapper
	}{
		{"mmap", []string{"mmapx %s", "mmapx %s", "dlopen %s"}, mmapsrc.Mmap, false},
		{"dlopen", []string{"dlopen %s", "mmapx %s"}, mmapsrc.Mmap, false},
		{"mprotect", []string{"mprotect %s", "mprotect %s", "mmapx %s"}, mmapsrc.Mprotect, false},
		{"ld_preload", []string{"preload %s", "mmapx %s"}, mmapsrc.Mmap, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tmpfs(t)
			lib, fence := copyLib(t, dir, "lib"+tc.name+".so"), copyLib(t, dir, "fence.so")
			m := startMapper(t)
			s := open(t, mmapsrc.Options{})
			watch(t, s, m)
			for _, c := range tc.cmds {
				m.Do(t, fmt.Sprintf(c, lib))
			}
			m.Do(t, "mmapx "+fence)
			got := of(t, until(t, s, fence, m.MntNS), lib, m.MntNS)
			if len(got) != 1 {
				t.Fatalf("%d events for %s, want 1: %+v", len(got), lib, got)
			}
			ev := got[0]
			dev, ino := devIno(t, lib)
			if ev.Kind != tc.kind || ev.Dev != dev || ev.Ino != ino || ev.PidNS != m.PidNS || ev.MntNS != m.MntNS {
				t.Errorf("event %+v, want kind %v dev %d ino %d pidns %d mntns %d", ev.Event, tc.kind, dev, ino, m.PidNS, m.MntNS)
			}
			if (ev.Pid == m.Pid) == tc.otherPid {
				t.Errorf("pid %d, mapper %d, want the mapper's child: %v", ev.Pid, m.Pid, tc.otherPid)
			}
			if ev.Err != nil || ev.Path != lib || ev.Sum != sum(t, lib) || ev.Changed || ev.Prot&unix.PROT_EXEC == 0 {
				t.Errorf("event %+v: want path %s, its sha256, unchanged, PROT_EXEC, no error", ev.Event, lib)
			}
		})
	}
}

// A mapping without PROT_EXEC, an mmap the kernel refuses (a noexec
// mount: EPERM, after the lock the program runs at), and any mapping of a
// task outside the watched pid namespaces, is not reported.
func TestNotReported(t *testing.T) {
	dir, noexecDir := tmpfs(t), tmpfs(t)
	readonly, other, fence := copyLib(t, dir, "libr.so"), copyLib(t, dir, "libo.so"), copyLib(t, dir, "fence.so")
	noexec := copyLib(t, noexecDir, "libn.so")
	if err := unix.Mount("", noexecDir, "", unix.MS_REMOUNT|unix.MS_NOEXEC, "size=64m"); err != nil {
		t.Fatal(err)
	}
	m, unwatched := startMapper(t), startMapper(t)
	s := open(t, mmapsrc.Options{})
	watch(t, s, m)
	if got := m.Ask(t, "mmapx "+noexec); got != "err Operation not permitted" {
		t.Errorf("mmap(PROT_EXEC) on a noexec mount: %q, want EPERM", got)
	}
	m.Do(t, "mmapr "+readonly)
	unwatched.Do(t, "mmapx "+other)
	unwatched.Do(t, "dlopen "+other)
	m.Do(t, "mmapx "+fence)
	evs := until(t, s, fence, m.MntNS)
	if got := of(t, evs, readonly, m.MntNS); len(got) != 0 {
		t.Errorf("read-only mapping reported: %+v", got)
	}
	if got := of(t, evs, noexec, m.MntNS); len(got) != 0 {
		t.Errorf("refused mapping (noexec mount) reported: %+v", got)
	}
	for _, ev := range evs {
		if ev.MntNS == unwatched.MntNS || ev.Pid == unwatched.Pid {
			t.Errorf("unwatched task reported: %+v", ev.Event)
		}
	}
}

// Each mount namespace gets its own report of the same file.
func TestSecondMountNamespace(t *testing.T) {
	dir := tmpfs(t)
	lib, fence := copyLib(t, dir, "libt.so"), copyLib(t, dir, "fence.so")
	a, b := startMapper(t), startMapper(t)
	s := open(t, mmapsrc.Options{})
	watch(t, s, a)
	watch(t, s, b)
	a.Do(t, "mmapx "+lib)
	a.Do(t, "mmapx "+fence)
	b.Do(t, "dlopen "+lib)
	b.Do(t, "mmapx "+fence)
	evs := until(t, s, fence, b.MntNS)
	for _, m := range []*harness.Mapper{a, b} {
		got := of(t, evs, lib, m.MntNS)
		if len(got) != 1 || got[0].Pid != m.Pid || got[0].Path != lib {
			t.Errorf("mnt ns %d: events %+v, want one of pid %d", m.MntNS, got, m.Pid)
		}
	}
}

// Forget, ForgetMntNS and a change of the file report it again.
func TestReportedAgain(t *testing.T) {
	dir := tmpfs(t)
	lib := copyLib(t, dir, "libt.so")
	m := startMapper(t)
	s := open(t, mmapsrc.Options{})
	watch(t, s, m)
	dev, ino := devIno(t, lib)
	for i, step := range []struct {
		name   string
		before func() error
		want   int
	}{
		{"first", nil, 1},
		{"again", nil, 0},
		{"forget", func() error { return s.Forget(dev, ino, m.MntNS) }, 1},
		{"again after forget", nil, 0},
		{"forget mount ns", func() error { return s.ForgetMntNS(m.MntNS) }, 1},
		{"changed", func() error {
			return os.WriteFile(lib, append(readFile(t, built.lib), "changed"...), 0o755)
		}, 1},
		{"again after change", nil, 0},
	} {
		if step.before != nil {
			if err := step.before(); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
		}
		fence := copyLib(t, dir, fmt.Sprintf("fence%d.so", i))
		m.Do(t, "mmapx "+lib)
		m.Do(t, "mmapx "+fence)
		got := of(t, until(t, s, fence, m.MntNS), lib, m.MntNS)
		if len(got) != step.want {
			t.Fatalf("%s: %d events, want %d: %+v", step.name, len(got), step.want, got)
		}
		if len(got) == 1 && (got[0].Sum != sum(t, lib) || got[0].Stamp.Size != fileSize(t, lib)) {
			t.Errorf("%s: event %+v does not hold the file's current content", step.name, got[0].Event)
		}
	}
}

// Mappings the kernel cannot report (ring buffer full while the receiver
// does not read) are counted per mount namespace and delivered as Lost:
// reported plus lost is every mapping.
func TestLostEventsAreCounted(t *testing.T) {
	const files = 300
	dir := tmpfs(t)
	m := startMapper(t)
	s := open(t, mmapsrc.Options{RingBytes: 4096, Queue: 1, LostPoll: 20 * time.Millisecond})
	watch(t, s, m)
	page := make([]byte, 4096)
	for i := range files {
		p := filepath.Join(dir, fmt.Sprintf("f%03d", i))
		if err := os.WriteFile(p, page, 0o644); err != nil {
			t.Fatal(err)
		}
		m.Do(t, "mmapx "+p)
	}
	var reported, lost uint64
	timeout := time.After(harness.DefaultTimeout)
	for reported+lost < files {
		select {
		case ev := <-s.Events():
			if ev.File != nil {
				ev.File.Close()
			}
			switch {
			case ev.MntNS != m.MntNS:
				t.Errorf("event of another mount ns: %+v", ev)
			case ev.Kind == mmapsrc.Lost:
				lost += ev.Count
			default:
				reported++
			}
		case <-timeout:
			t.Fatalf("reported %d + lost %d, want %d", reported, lost, files)
		}
	}
	if reported+lost != files || lost == 0 {
		t.Errorf("reported %d + lost %d, want %d with some lost", reported, lost, files)
	}
	if st := s.Stats(); st.Lost < lost || st.Reported < reported {
		t.Errorf("stats %+v, want lost >= %d, reported >= %d", st, lost, reported)
	}
	t.Logf("ring of 4 KiB, receiver not reading: %d reported, %d lost", reported, lost)
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// A library on overlayfs (as in a container's rootfs) is reported with the
// overlay's dev/ino and path for mmap and mprotect alike: the vma holds the
// real file, the source reports the file the task mapped.
func TestOverlay(t *testing.T) {
	dir := tmpfs(t)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyLib(t, filepath.Join(dir, "lower"), "libt.so")
	copyLib(t, filepath.Join(dir, "lower"), "fence1.so")
	copyLib(t, filepath.Join(dir, "lower"), "fence2.so")
	merged := filepath.Join(dir, "merged")
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", dir, dir, dir)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })
	lib := filepath.Join(merged, "libt.so")
	s := open(t, mmapsrc.Options{})
	for i, tc := range []struct {
		cmds []string
		kind mmapsrc.Kind
	}{
		{[]string{"mprotect " + lib, "mmapx " + lib}, mmapsrc.Mprotect},
		{[]string{"mmapx " + lib, "mprotect " + lib}, mmapsrc.Mmap},
	} {
		m := startMapper(t)
		watch(t, s, m)
		for _, c := range tc.cmds {
			m.Do(t, c)
		}
		fence := filepath.Join(merged, fmt.Sprintf("fence%d.so", i+1))
		m.Do(t, "mmapx "+fence)
		got := of(t, until(t, s, fence, m.MntNS), lib, m.MntNS)
		if len(got) != 1 || got[0].Kind != tc.kind || got[0].Path != lib || got[0].Sum != sum(t, lib) || got[0].Err != nil {
			t.Errorf("%v: events %+v, want one %v of %s", tc.cmds, got, tc.kind, lib)
		}
	}
}

// A mapping whose file can no longer be opened (the task exited before
// the receiver got to it) is delivered with Err and no file, and counted:
// not dropped.
func TestUnresolvedIsDelivered(t *testing.T) {
	dir := tmpfs(t)
	m := startMapper(t)
	s := open(t, mmapsrc.Options{Queue: 1})
	watch(t, s, m)
	var libs []string
	for i := range 3 { // 1 waits in the channel, 2 in the reader, 3 in the ring buffer
		libs = append(libs, copyLib(t, dir, fmt.Sprintf("lib%d.so", i)))
		m.Do(t, "mmapx "+libs[i])
	}
	m.Exit(t)
	evs := until(t, s, libs[2], m.MntNS)
	last := evs[len(evs)-1]
	if last.Err == nil || last.Sum != ([32]byte{}) || last.Path != "" || last.Pid != m.Pid {
		t.Errorf("event of an exited task: %+v, want Err and no file", last.Event)
	}
	if st := s.Stats(); st.Unresolved == 0 {
		t.Errorf("stats %+v: unresolved not counted", st)
	}
}
