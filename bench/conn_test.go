package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	imafsfs "github.com/imafs/imafs/fs"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/mountns"
)

// BenchmarkBulkCatContainer: `cat` (run in the container's pid namespace
// by nsenter) of a container's 100,000-entry ascii list through its own
// tree, served as `imafs serve` serves it (fs.Mount: a mountns.Conn, whose
// buffers come from a shared pool once a request is there) and by go-fuse's
// Server (each reader owning a buffer, as before issue 14's fourth step),
// side by side: both 128 KiB READs.
func BenchmarkBulkCatContainer(b *testing.B) {
	reg := serve(b).reg
	pid := harness.StartSleeper(b).Pid
	ns, err := reg.Attach("bulk", pid, []byte(`{"ociVersion":"1.0.2"}`))
	if err != nil {
		b.Fatal(err)
	}
	fill(b, reg, ns, 100000)
	want, err := os.ReadFile(filepath.Join(mountFor(b, reg, ns, nil), "ima/ascii_runtime_measurements"))
	if err != nil {
		b.Fatal(err)
	}
	for _, v := range []struct {
		name  string
		mount func(*testing.B, *imans.Registry, *imans.Namespace) string
	}{{"conn", func(b *testing.B, reg *imans.Registry, ns *imans.Namespace) string {
		return mountFor(b, reg, ns, nil)
	}}, {"gofuse-server", mountServerFor}} {
		file := filepath.Join(v.mount(b, reg, ns), "ima/ascii_runtime_measurements")
		b.Run(v.name, func(b *testing.B) {
			cat := func() *exec.Cmd {
				return exec.Command("nsenter", "--target", strconv.Itoa(pid), "--pid", "--", "cat", file)
			}
			if got, err := cat().Output(); err != nil || string(got) != string(want) {
				b.Fatalf("cat %s: %v, %d bytes, want %d", file, err, len(got), len(want))
			}
			devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer devnull.Close()
			b.SetBytes(int64(len(want)))
			b.ResetTimer()
			cpu := cpuWithChildren()
			for i := 0; i < b.N; i++ {
				cmd := cat()
				cmd.Stdout = devnull
				if err := cmd.Run(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuWithChildren()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// mountServerFor is mountFor with the tree served by go-fuse's own Server
// (mountns.ServeRaw), as container trees were before issue 14's fourth
// step.
func mountServerFor(b *testing.B, reg *imans.Registry, ns *imans.Namespace) string {
	b.Helper()
	dir := harness.TempDir(b)
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	root := imafsfs.NewRoot(imafsfs.Options{Registry: reg, Log: log, Owner: ns})
	dev, err := mountns.MountFUSE(os.Getpid(), dir, mountns.Options{AllowOther: true, AllowShared: true})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := mountns.ServeRaw(dev, root.RawFileSystem(), root.MountOptions().MountOptions)
	if err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		b.Fatal(err)
	}
	b.Cleanup(func() {
		unix.Unmount(dir, unix.MNT_DETACH)
		srv.Wait()
	})
	return dir
}
