package mountns

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// sizedRoot is a go-fuse tree with one file, /data, of the given bytes.
type sizedRoot struct {
	fs.Inode
	data []byte
}

func (r *sizedRoot) OnAdd(ctx context.Context) {
	f := &fs.MemRegularFile{Data: r.data, Attr: fuseAttr(0o444)}
	r.AddChild("data", r.NewPersistentInode(ctx, f, fs.StableAttr{}), false)
}

// serveConn mounts root at target in pid's namespace and serves it with a
// Conn; the mount is lazily unmounted at cleanup.
func serveConn(t *testing.T, pid int, target string, root fs.InodeEmbedder) *Conn {
	t.Helper()
	opts := Options{MkdirAll: true, AllowOther: true, Subtype: "imafs-test"}
	dev, err := MountFUSE(pid, target, opts)
	if err != nil {
		t.Fatalf("MountFUSE: %v", err)
	}
	mo := fuse.MountOptions{MaxWrite: 128 << 10}
	c, err := ServeConn(dev, fs.NewNodeFS(root, &fs.Options{MountOptions: mo}), mo)
	if err != nil {
		Unmount(pid, target, true)
		t.Fatalf("ServeConn: %v", err)
	}
	t.Cleanup(func() { Unmount(pid, target, true) })
	return c
}

// TestConnServes: reads through a Conn return the file's bytes, whether
// they fit one READ or need several (128 KiB each), also from concurrent
// readers; the Conn ends when its mount goes.
func TestConnServes(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pid := sleeper(t, "mount -t tmpfs imafs-test-tmp "+dir, "-m", "--propagation", "private")
	for _, tc := range []struct {
		name    string
		size    int
		readers int
	}{
		{"small", 17, 1},
		{"one-read", 128 << 10, 1},
		{"several-reads", 300<<10 + 1, 1},
		{"concurrent", 300<<10 + 1, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, tc.size)
			for i := range data {
				data[i] = byte('a' + i%26)
			}
			target := filepath.Join(dir, tc.name)
			c := serveConn(t, pid, target, &sizedRoot{data: data})
			var wg sync.WaitGroup
			errs := make(chan error, tc.readers)
			for range tc.readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, err := exec.Command("nsenter", "--target", strconv.Itoa(pid), "--mount", "--",
						"dd", "if="+target+"/data", "bs=1M", "status=none").Output()
					if err != nil {
						errs <- err
					} else if !bytes.Equal(out, data) {
						errs <- fmt.Errorf("read %d bytes, want the %d of the file", len(out), len(data))
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if err := Unmount(pid, target, true); err != nil {
				t.Fatal(err)
			}
			ended := make(chan struct{})
			go func() { c.Wait(); close(ended) }()
			select {
			case <-ended:
			case <-time.After(10 * time.Second):
				t.Fatal("Conn did not end after its unmount")
			}
		})
	}
}

// TestConnIdleHoldsNoThread: an idle Conn waits in the runtime's poller,
// not in a read(2) of its own thread as go-fuse's Server does, so 64 idle
// connections add no OS threads (a few at most, for the runtime).
func TestConnIdleHoldsNoThread(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pid := sleeper(t, "mount -t tmpfs imafs-test-tmp "+dir, "-m", "--propagation", "private")
	before := threads(t)
	const n = 64
	for i := range n {
		serveConn(t, pid, filepath.Join(dir, strconv.Itoa(i)), &helloRoot{})
	}
	out, err := nsenter(t, pid, "cat", filepath.Join(dir, "0", "hello"))
	if err != nil || out != "hello from imafs\n" {
		t.Fatalf("cat: %q, %v", out, err)
	}
	if grown := threads(t) - before; grown > n/4 {
		t.Fatalf("%d idle connections added %d threads", n, grown)
	}
}

// threads is the process's number of OS threads.
func threads(t *testing.T) int {
	t.Helper()
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads: in /proc/self/status")
	return 0
}

// TestConnOpenInProcess: this process opens files of a tree it serves with
// a Conn through os.Open, which adds every file to the runtime's epoll set:
// the kernel asks the server for POLL while holding that set's lock. A
// Conn waiting in the runtime's poller deadlocked there; it waits in an
// epoll set of its own.
func TestConnOpenInProcess(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pid := sleeper(t, "mount -t tmpfs imafs-test-tmp "+dir, "-m", "--propagation", "private")
	target := filepath.Join(dir, "t")
	serveConn(t, pid, target, &helloRoot{})
	done := make(chan error, 1)
	go func() {
		for range 100 {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s/hello", pid, target))
			if err != nil || string(b) != "hello from imafs\n" {
				done <- fmt.Errorf("read: %q, %v", b, err)
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("os.ReadFile of a file this process serves hangs")
	}
}
