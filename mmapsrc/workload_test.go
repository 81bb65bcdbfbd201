package mmapsrc_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/mmapsrc"
)

// built holds the test workload and library, compiled once per test binary.
var built struct{ mapper, lib string }

func TestMain(m *testing.M) {
	if os.Getenv(workloadEnv) == "1" { // the guest tests' workload
		os.Exit(guestWorkload())
	}
	code := func() int {
		// the tests skip otherwise; the QEMU guest has no gcc
		if os.Geteuid() == 0 && os.Getenv(guestEnv) == "" {
			dir, err := os.MkdirTemp("", "mmapsrc-test-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			if built.mapper, built.lib, err = harness.BuildMapper(dir); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// tmpfs mounts a tmpfs on a new temp dir (unmounted on cleanup).
func tmpfs(t *testing.T) string {
	t.Helper()
	harness.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// copyLib copies the test library to dir/name.
func copyLib(t *testing.T, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(built.lib)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func startMapper(t *testing.T) *harness.Mapper {
	t.Helper()
	return harness.StartMapper(t, built.mapper)
}

// open opens a source (closed on cleanup).
func open(t *testing.T, opts mmapsrc.Options) *mmapsrc.Source {
	t.Helper()
	harness.RequireRoot(t)
	s, err := mmapsrc.Open(opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		for ev := range s.Events() {
			if ev.File != nil {
				ev.File.Close()
			}
		}
	})
	return s
}

func watch(t *testing.T, s *mmapsrc.Source, m *harness.Mapper) {
	t.Helper()
	undo, err := s.Watch(m.PidNS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { undo() })
}

// received is an event as a test keeps it: the file's digest instead of
// the file.
type received struct {
	mmapsrc.Event
	Sum [32]byte
}

// until receives events until one of (dev, ino) of path arrives from mount
// namespace mntns (a fence: the ring buffer is ordered, so everything
// reported before it has arrived too) and returns them all.
func until(t *testing.T, s *mmapsrc.Source, path string, mntns uint64) []received {
	t.Helper()
	dev, ino := devIno(t, path)
	var got []received
	timeout := time.After(harness.DefaultTimeout)
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				t.Fatal("events closed")
			}
			r := received{Event: ev}
			if ev.File != nil {
				h := sha256.New()
				if _, err := io.Copy(h, ev.File); err != nil {
					t.Errorf("read %s: %v", ev.Path, err)
				}
				copy(r.Sum[:], h.Sum(nil))
				ev.File.Close()
				r.File = nil
			}
			got = append(got, r)
			if ev.Dev == dev && ev.Ino == ino && ev.MntNS == mntns && ev.Kind != mmapsrc.Lost {
				return got
			}
		case <-timeout:
			t.Fatalf("no event for %s in mnt ns %d within %v; got %+v", path, mntns, harness.DefaultTimeout, got)
		}
	}
}

func devIno(t *testing.T, path string) (uint64, uint64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev, st.Ino
}

// of returns the events of (dev, ino) of path in mntns.
func of(t *testing.T, evs []received, path string, mntns uint64) []received {
	t.Helper()
	dev, ino := devIno(t, path)
	var out []received
	for _, ev := range evs {
		if ev.Dev == dev && ev.Ino == ino && ev.MntNS == mntns && ev.Kind != mmapsrc.Lost {
			out = append(out, ev)
		}
	}
	return out
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}
