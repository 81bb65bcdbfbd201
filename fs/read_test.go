package fs

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
)

// fillHost records n distinct ima-ng entries in the host's list.
func fillHost(t *testing.T, reg *imans.Registry, n int) {
	t.Helper()
	var seed [8]byte
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint64(seed[:], uint64(i))
		d := sha256.Sum256(seed[:])
		e, err := measurelog.NewEntry("ima-ng", 10, measurelog.Measurement{
			FileDigest: d[:], FileAlgo: measurelog.SHA256, Name: fmt.Sprintf("/usr/lib/lib%06d.so", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.Record(reg.Host(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLargeReads: READs of up to 1 MiB (rendered in parts on several CPUs)
// give the list's bytes at every offset and read size, and the lists'
// st_blksize is the tree's largest READ.
func TestLargeReads(t *testing.T) {
	fx := mount(t, imans.Options{})
	fillHost(t, fx.reg, 12000) // ~1.9 MB of ascii, ~1.1 MB binary
	for _, f := range []struct {
		name   string
		format measurelog.Format
		bank   measurelog.Algo
	}{
		{"ascii_runtime_measurements", measurelog.ASCII, measurelog.SHA1},
		{"binary_runtime_measurements_sha256", measurelog.Binary, measurelog.SHA256},
	} {
		path := filepath.Join(fx.ima, f.name)
		want := []byte(render(fx.reg.Host().List, f.format, f.bank))
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil || st.Blksize != HostMaxRead {
			t.Fatalf("stat %s: blksize %d, %v; want %d", f.name, st.Blksize, err, HostMaxRead)
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1 << 20, 3 << 18, 300001, 128 << 10, 4097} {
			for _, off := range []int64{0, 1, 131071, int64(len(want)) - 200000, int64(len(want)) - 5} {
				buf := make([]byte, size)
				n, err := unix.Pread(fd, buf, off)
				end := min(off+int64(size), int64(len(want)))
				if err != nil || !bytes.Equal(buf[:n], want[off:end]) {
					t.Fatalf("%s: pread %d at %d: %d bytes, %v; want %d bytes of the list", f.name, size, off, n, err, end-off)
				}
			}
		}
		unix.Close(fd)
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: read whole: %d bytes, %v; want %d", f.name, len(got), err, len(want))
		}
	}
}

// TestMaxReadDefaults: the host's tree reads 1 MiB at a time, a
// container's go-fuse's 128 KiB (its buffers are paid per mount), and an
// explicit MaxRead wins; replies are never staged for splice, and the
// kernel may cache the (static, caller-independent) symlink targets.
func TestMaxReadDefaults(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want int
	}{
		{Options{}, HostMaxRead},
		{Options{Owner: &imans.Namespace{ID: "c"}}, DefaultMaxRead},
		{Options{MaxRead: 64 << 10}, 64 << 10},
	} {
		r := NewRoot(tc.opts)
		if mo := r.MountOptions(); r.opts.MaxRead != tc.want || mo.MaxWrite != tc.want || !mo.DisableSplice || !mo.EnableSymlinkCaching {
			t.Errorf("owner %v, MaxRead %d: tree %d, MaxWrite %d, splice off %v; want %d", tc.opts.Owner != nil, tc.opts.MaxRead, r.opts.MaxRead, mo.MaxWrite, mo.DisableSplice, tc.want)
		}
	}
}
