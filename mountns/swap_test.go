package mountns

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
)

// textRoot is a go-fuse tree with one file, /hello, holding text.
type textRoot struct {
	fs.Inode
	text string
}

func (r *textRoot) OnAdd(ctx context.Context) {
	f := &fs.MemRegularFile{Data: []byte(r.text), Attr: fuseAttr(0o444)}
	r.AddChild("hello", r.NewPersistentInode(ctx, f, fs.StableAttr{}), false)
}

// serveText mounts a textRoot at target in pid's namespace (or, with
// swap, in place of the mount there) and returns a channel closed when
// its server ends.
func serveText(t *testing.T, pid int, target, text string, opts Options, swap bool) <-chan struct{} {
	t.Helper()
	var dev *os.File
	var err error
	if swap {
		var beneath bool
		dev, beneath, err = SwapFUSE(pid, target, opts)
		if err == nil && !beneath {
			t.Log("no MOVE_MOUNT_BENEATH: swapped with a gap")
		}
	} else {
		dev, err = MountFUSE(pid, target, opts)
	}
	if err != nil {
		t.Fatalf("mount (swap %v): %v", swap, err)
	}
	srv, err := Serve(dev, &textRoot{text: text}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	return done
}

// TestSwapFUSE replaces a live mount and a dead one: the target then has
// exactly one mount of the type, served by the new server, and the old
// server ends once nothing holds its mount.
func TestSwapFUSE(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pid := sleeper(t, "mount -t tmpfs imafs-test-tmp "+dir, "-m", "--propagation", "private")
	target := filepath.Join(dir, "security")
	opts := Options{MkdirAll: true, AllowOther: true, Subtype: "imafs-test"}
	t.Cleanup(func() { Unmount(pid, target, true) })
	old := serveText(t, pid, target, "old\n", opts, false)
	check := func(want string) {
		t.Helper()
		if out, err := nsenter(t, pid, "cat", target+"/hello"); err != nil || out != want {
			t.Fatalf("cat: %q, %v; want %q", out, err, want)
		}
		info, _ := nsenter(t, pid, "cat", "/proc/self/mountinfo")
		if n := strings.Count(info, " "+target+" "); n != 1 {
			t.Fatalf("%d mounts at %s, want 1:\n%s", n, target, info)
		}
	}
	check("old\n")
	serveText(t, pid, target, "new\n", opts, true)
	check("new\n")
	select {
	case <-old:
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced mount's server did not end")
	}
	// A dead predecessor (a crashed daemon): ENOTCONN, swapped all the same.
	abortConnection(t, pid, target)
	serveText(t, pid, target, "after crash\n", opts, true)
	check("after crash\n")
}

// TestSwapFUSERefusesSharedMount: SwapFUSE keeps MountFUSE's guard.
func TestSwapFUSERefusesSharedMount(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pid := sleeper(t, "mount -t tmpfs imafs-test-tmp "+dir+" && mount --make-shared "+dir,
		"-m", "--propagation", "private")
	target := filepath.Join(dir, "x")
	opts := Options{MkdirAll: true, Subtype: "imafs-test", AllowShared: true}
	t.Cleanup(func() { Unmount(pid, target, true) })
	serveText(t, pid, target, "old\n", opts, false)
	opts.AllowShared = false
	dev, _, err := SwapFUSE(pid, target, opts)
	if err == nil {
		dev.Close()
		t.Fatal("SwapFUSE on a shared mount succeeded")
	}
	if !errors.Is(err, ErrShared) {
		t.Fatalf("want ErrShared, got %v", err)
	}
	if out, err := nsenter(t, pid, "cat", target+"/hello"); err != nil || out != "old\n" {
		t.Fatalf("the refused swap changed the mount: %q, %v", out, err)
	}
}
