package mountns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Conn serves one FUSE connection the way an idle container's connection
// should cost little: the /dev/fuse descriptor is non-blocking and waits in
// the Go runtime's poller (no OS thread blocked in read(2), one parked
// goroutine), and request and reply buffers are taken from a pool shared by
// every Conn only once the kernel has a request, and given back when it is
// answered. go-fuse's Server instead keeps, per connection, a reader blocked
// in read(2) holding a buffer of MaxWrite plus a page (docs/benchmarks.md,
// "Issue 14, fourth step"). The FUSE protocol itself is go-fuse's
// (fuse.ProtocolServer): the same handlers, the same replies.
//
// Requests of one connection are served concurrently, at most
// ConnRequests at once; a connection that has that many in flight reads no
// more until one is answered, so it queues behind itself, never another
// connection's requests.
type Conn struct {
	ps      *fuse.ProtocolServer
	raw     fuse.RawFileSystem
	file    *os.File
	rc      syscall.RawConn
	bufs    *sync.Pool
	slots   chan struct{}
	serving sync.WaitGroup
	done    chan struct{}
}

// ConnRequests bounds the requests of one Conn served at once (go-fuse's
// own bound on a connection's readers, maxMaxReaders).
const ConnRequests = 16

// connPools holds one buffer pool per buffer size, shared by every Conn.
var connPools sync.Map // int -> *sync.Pool

// connBufSize is the size of a Conn's request and reply buffers: the
// kernel refuses a read of /dev/fuse into less than max_write plus the
// WRITE header (and less than 8 KiB), and a READ's reply is up to max_pages
// pages plus its header.
func connBufSize(maxWrite int) int {
	const page = 4096
	return max((maxWrite+page-1)/page*page+page, 2*page)
}

func bufPool(size int) *sync.Pool {
	if p, ok := connPools.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := connPools.LoadOrStore(size, &sync.Pool{New: func() any {
		b := make([]byte, size)
		return &b
	}})
	return p.(*sync.Pool)
}

// ServeConn serves raw on dev, a /dev/fuse file mounted by MountFUSE, with
// a Conn; it answers the kernel's INIT before it returns. mo's protocol
// options apply as with ServeRaw (MaxWrite: max_write and max_pages, 128 KiB
// when 0). It takes ownership of dev. On failure the mount is left behind
// dead (ENOTCONN); Unmount it.
func ServeConn(dev *os.File, raw fuse.RawFileSystem, mo fuse.MountOptions) (*Conn, error) {
	defer dev.Close()
	file, err := nonblockingDup(dev)
	if err != nil {
		return nil, fmt.Errorf("serve fuse: %w", err)
	}
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("serve fuse: %w", err)
	}
	if mo.MaxWrite <= 0 {
		mo.MaxWrite = 128 << 10
	}
	raw = inPlaceReads{raw}
	c := &Conn{
		ps:    fuse.NewProtocolServer(raw, &mo),
		raw:   raw,
		file:  file,
		rc:    rc,
		bufs:  bufPool(connBufSize(mo.MaxWrite)),
		slots: make(chan struct{}, ConnRequests),
		done:  make(chan struct{}),
	}
	if err := c.init(); err != nil {
		file.Close()
		return nil, fmt.Errorf("serve fuse: init: %w", err)
	}
	go c.loop()
	return c, nil
}

// nonblockingDup returns a non-blocking, close-on-exec duplicate of dev's
// descriptor, registered with the runtime's poller (/dev/fuse polls).
func nonblockingDup(dev *os.File) (*os.File, error) {
	sc, err := dev.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, dupErr := -1, error(nil)
	if err := sc.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, fmt.Errorf("dup /dev/fuse fd: %w", dupErr)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("/dev/fuse fd: set non-blocking: %w", err)
	}
	return os.NewFile(uintptr(dup), "/dev/fuse"), nil
}

// init answers the connection's first request, INIT.
func (c *Conn) init() error {
	for {
		in, n, err := c.read()
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n < 8 || binary.NativeEndian.Uint32((*in)[4:8]) != 26 { // FUSE_INIT
			c.bufs.Put(in)
			return fmt.Errorf("first request is not INIT")
		}
		c.serving.Add(1)
		c.slots <- struct{}{}
		c.handle(in, n)
		return nil
	}
}

// loop reads requests until the connection ends and serves each in a
// goroutine of its own.
func (c *Conn) loop() {
	defer c.end()
	for {
		c.slots <- struct{}{}
		in, n, err := c.read()
		if err != nil {
			<-c.slots
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINTR) {
				continue // a request interrupted before it was read
			}
			return // ENODEV: unmounted, aborted
		}
		c.serving.Add(1)
		go c.handle(in, n)
	}
}

// read waits until the kernel has a request and reads it into a pooled
// buffer. While it waits it holds no buffer.
func (c *Conn) read() (*[]byte, int, error) {
	var buf *[]byte
	var n int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		buf = c.bufs.Get().(*[]byte)
		n, rerr = unix.Read(int(fd), *buf)
		if rerr == unix.EAGAIN {
			c.bufs.Put(buf)
			return false
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		c.bufs.Put(buf)
		return nil, 0, err
	}
	return buf, n, nil
}

// handle answers one request and gives its slot and buffers back.
func (c *Conn) handle(in *[]byte, n int) {
	out := c.bufs.Get().(*[]byte)
	defer func() {
		c.bufs.Put(out)
		c.bufs.Put(in)
		<-c.slots
		c.serving.Done()
	}()
	m, st := c.ps.HandleRequest([][]byte{(*in)[:n]}, [][]byte{*out})
	reply := (*out)[:m]
	if !st.Ok() {
		// A request go-fuse could not parse: answer it with the error
		// rather than leave the caller waiting.
		if n < 16 {
			return
		}
		reply = (*out)[:16]
		binary.NativeEndian.PutUint32(reply[0:], 16)
		binary.NativeEndian.PutUint32(reply[4:], uint32(-int32(st)))
		copy(reply[8:16], (*in)[8:16]) // unique
	}
	if len(reply) == 0 {
		return // FORGET, INTERRUPT: no reply
	}
	// Errors are the caller's: ENOENT when its request was interrupted
	// and answered meanwhile, ENODEV once the connection is gone.
	c.rc.Write(func(fd uintptr) bool {
		_, err := unix.Write(int(fd), reply)
		return err != unix.EAGAIN
	})
}

// end runs once the connection is gone: in-flight requests are answered
// (their replies fail), then the file system hears of the unmount.
func (c *Conn) end() {
	c.serving.Wait()
	c.file.Close()
	c.raw.OnUnmount()
	close(c.done)
}

// Wait waits until the connection has ended (unmounted, aborted) and its
// requests are answered.
func (c *Conn) Wait() { <-c.done }

// inPlaceReads answers a READ rendered in the reply buffer itself without
// copying it onto itself: go-fuse's ProtocolServer hands the file system
// the reply's payload as its buffer, then copies the ReadResult into that
// payload.
type inPlaceReads struct{ fuse.RawFileSystem }

// Read implements fuse.RawFileSystem.
func (r inPlaceReads) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	res, st := r.RawFileSystem.Read(cancel, in, buf)
	if res == nil {
		return res, st
	}
	return inPlaceResult{res}, st
}

type inPlaceResult struct{ fuse.ReadResult }

// Readv is what ProtocolServer calls to fill the reply (go-fuse's
// unexported withReadv).
func (r inPlaceResult) Readv(dst [][]byte) (int, fuse.Status) {
	b, st := r.Bytes(nil)
	if !st.Ok() || len(b) == 0 {
		return 0, st
	}
	if len(dst) == 1 && len(dst[0]) >= len(b) && &dst[0][0] == &b[0] {
		return len(b), fuse.OK
	}
	n := 0
	for _, d := range dst {
		n += copy(d, b[n:])
	}
	return n, fuse.OK
}

// DisablePoll makes the kernel stop sending POLL requests to the FUSE
// connection mounted at target in pid's mount namespace (resolved against
// pid's root, like MountFUSE), as go-fuse's own mounts do (its "poll
// hack"): it opens go-fuse's hidden file there and polls it once, and the
// ENOSYS answer turns POLL off for the connection. Without it, this
// process adding a file of a mount it serves with a Conn to the Go
// runtime's epoll set (os.Open does, for any file) would deadlock: the
// kernel asks the server for POLL while holding the epoll set's lock, and
// the Conn only hears of the request through that epoll set. Call it once
// the connection is served.
func DisablePoll(pid int, target string) error {
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("disable poll: root of pid %d: %w", pid, err)
	}
	defer unix.Close(root)
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT}
	fd, err := unix.Openat2(root, filepath.Join(target, pollHackName), &how)
	if err != nil {
		return fmt.Errorf("disable poll: open %s in pid %d's root: %w", target, pid, err)
	}
	defer unix.Close(fd)
	// The answer does not matter, only that the kernel asked.
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return nil
}

// pollHackName is the file go-fuse's protocol handler answers in every
// tree's root for DisablePoll (fuse/poll.go).
const pollHackName = ".go-fuse-epoll-hack"
