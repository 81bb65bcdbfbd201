package mountns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Conn serves one FUSE connection the way an idle container's connection
// should cost little: its /dev/fuse descriptor is non-blocking and waits,
// with every other Conn's, in one epoll set (one thread blocked in
// epoll_wait for all of them; its goroutine parked on a channel), and
// request and reply buffers are taken from a pool shared by every Conn only
// once the kernel has a request, and given back when it is answered.
// go-fuse's Server instead keeps, per connection, a reader thread blocked
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
	fd      int
	id      int32         // key in the poller
	ready   chan struct{} // the poller's wake-up: fd readable
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
	p, err := getPoller()
	if err != nil {
		return nil, fmt.Errorf("serve fuse: %w", err)
	}
	fd, err := nonblockingDup(dev)
	if err != nil {
		return nil, fmt.Errorf("serve fuse: %w", err)
	}
	if mo.MaxWrite <= 0 {
		mo.MaxWrite = 128 << 10
	}
	raw = inPlaceReads{raw}
	c := &Conn{
		ps:    fuse.NewProtocolServer(raw, &mo),
		raw:   raw,
		fd:    fd,
		ready: make(chan struct{}, 1),
		bufs:  bufPool(connBufSize(mo.MaxWrite)),
		slots: make(chan struct{}, ConnRequests),
		done:  make(chan struct{}),
	}
	if err := p.add(c); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("serve fuse: %w", err)
	}
	if err := c.init(); err != nil {
		p.remove(c)
		unix.Close(fd)
		return nil, fmt.Errorf("serve fuse: init: %w", err)
	}
	go c.loop()
	return c, nil
}

// nonblockingDup returns a non-blocking, close-on-exec duplicate of dev's
// descriptor.
func nonblockingDup(dev *os.File) (int, error) {
	dup, err := dupCloexec(dev)
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return -1, fmt.Errorf("/dev/fuse fd: set non-blocking: %w", err)
	}
	return dup, nil
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
	for {
		buf := c.bufs.Get().(*[]byte)
		n, err := unix.Read(c.fd, *buf)
		if err == nil {
			return buf, n, nil
		}
		c.bufs.Put(buf)
		if err != unix.EAGAIN {
			return nil, 0, err
		}
		<-c.ready
	}
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
	unix.Write(c.fd, reply)
}

// end runs once the connection is gone: in-flight requests are answered
// (their replies fail), then the file system hears of the unmount.
func (c *Conn) end() {
	c.serving.Wait()
	thePoller.remove(c)
	unix.Close(c.fd)
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

// poller waits for every Conn's descriptor in one epoll set, on a thread
// blocked in epoll_wait: a request wakes that thread at once, as it would
// wake go-fuse's reader blocked in read(2). (The Go runtime's own poller
// would do the waiting too, but it looks at its epoll set only when a
// processor is idle or every 10 ms: under a flood of list reads, a quiet
// container's request would wait for that.) Descriptors are
// edge-triggered: a Conn reads until a read finds nothing, then waits for
// the next request's wake-up (a wake-up for a request it has read already
// costs one read that finds nothing).
type poller struct {
	epfd  int
	mu    sync.Mutex
	next  int32
	conns map[int32]*Conn
}

var (
	pollerOnce sync.Once
	thePoller  *poller
	pollerErr  error
)

func getPoller() (*poller, error) {
	pollerOnce.Do(func() {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			pollerErr = fmt.Errorf("epoll_create1: %w", err)
			return
		}
		thePoller = &poller{epfd: fd, conns: map[int32]*Conn{}}
		go thePoller.run()
	})
	return thePoller, pollerErr
}

func (p *poller) add(c *Conn) error {
	p.mu.Lock()
	p.next++
	c.id = p.next
	p.conns[c.id] = c
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: c.id}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		p.remove(c)
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

func (p *poller) remove(c *Conn) {
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	p.mu.Lock()
	delete(p.conns, c.id)
	p.mu.Unlock()
}

func (p *poller) run() {
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			continue // EINTR
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			if c := p.conns[ev.Fd]; c != nil {
				select {
				case c.ready <- struct{}{}:
				default:
				}
			}
		}
		p.mu.Unlock()
		// The Conns just woken wait on this processor; let them run
		// before this goroutine blocks in epoll_wait again with it.
		runtime.Gosched()
	}
}
