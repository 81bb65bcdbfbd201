package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// maxRequest bounds one request line (an OCI config or a policy is inside).
const maxRequest = 8 << 20

// Handler serves one request. It must call exactly one of rw.Reply or
// rw.Fail; after a Reply with Stream set it may write raw bytes to rw.
type Handler interface {
	Serve(ctx context.Context, req *Request, rw *ReplyWriter)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request, rw *ReplyWriter)

// Serve implements Handler.
func (f HandlerFunc) Serve(ctx context.Context, req *Request, rw *ReplyWriter) { f(ctx, req, rw) }

// ReplyWriter answers one request.
type ReplyWriter struct {
	conn     net.Conn
	w        *bufio.Writer
	replied  bool
	onStream func() // called once a Reply starts a stream
}

// Reply sends resp (OK is set).
func (rw *ReplyWriter) Reply(resp *Response) error {
	if rw.replied {
		return errors.New("control: second reply")
	}
	rw.replied = true
	resp.OK = true
	err := rw.send(resp)
	if resp.Stream && rw.onStream != nil {
		rw.onStream()
	}
	return err
}

// Fail sends an error response, with the code of the sentinel error err
// wraps (CodeOf).
func (rw *ReplyWriter) Fail(err error) error {
	if rw.replied {
		return errors.New("control: second reply")
	}
	rw.replied = true
	return rw.send(&Response{Error: err.Error(), Code: CodeOf(err)})
}

func (rw *ReplyWriter) send(resp *Response) error {
	b, err := json.Marshal(resp)
	if err != nil {
		return fmt.Errorf("control: encode response: %w", err)
	}
	b = append(b, '\n')
	if _, err := rw.w.Write(b); err != nil {
		return err
	}
	return rw.w.Flush()
}

// Write writes raw stream bytes (after a Reply with Stream set).
func (rw *ReplyWriter) Write(p []byte) (int, error) { return rw.w.Write(p) }

// Flush sends buffered stream bytes.
func (rw *ReplyWriter) Flush() error { return rw.w.Flush() }

// Server accepts control connections.
type Server struct {
	ln      *net.UnixListener
	path    string
	handler Handler
	log     *logrus.Logger

	mu      sync.Mutex // orders a handler's wg.Add before Close's wg.Wait
	closing bool
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
	stopped atomic.Bool // StopListening: the socket path may be another's now
}

// Listen creates the socket at path (mode 0600, its directory 0755 if it
// has to be made). A stale socket (nobody answering) is replaced; a live
// one is an error.
func Listen(path string, h Handler, log *logrus.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control listen %s: %w", path, err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control listen %s: a daemon is already listening", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control listen %s: remove stale socket: %w", path, err)
	}
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control listen %s: chmod: %w", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{ln: ln, path: path, handler: h, log: log, ctx: ctx, cancel: cancel}, nil
}

// Serve accepts connections until Close.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil || s.stopped.Load() {
				return nil
			}
			return fmt.Errorf("control accept: %w", err)
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
}

func (s *Server) serveConn(c *net.UnixConn) {
	defer c.Close()
	rw := &ReplyWriter{conn: c, w: bufio.NewWriterSize(c, 64<<10)}
	if err := checkPeer(c); err != nil {
		s.log.WithError(err).Warn("control: refused connection")
		rw.Fail(err)
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// Closing the connection (or the server) cancels a streaming request.
	go func() {
		<-ctx.Done()
		c.SetDeadline(time.Now())
	}()
	br := bufio.NewReaderSize(io.LimitReader(c, maxRequest), 64<<10)
	line, err := br.ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		rw.Fail(fmt.Errorf("read request: %w", err))
		return
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		rw.Fail(fmt.Errorf("decode request: %w", err))
		return
	}
	// A client that hangs up ends a stream. Only a stream: the read also
	// ends at a half-close right after the request (socat, or a request
	// without its newline), and such a client still waits for its reply.
	hup := make(chan struct{})
	go func() {
		var b [1]byte
		c.Read(b[:])
		close(hup)
	}()
	rw.onStream = func() {
		go func() {
			select {
			case <-hup:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	log := s.log.WithFields(logrus.Fields{"op": req.Op, "id": req.ID})
	log.Debug("control request")
	func() {
		defer func() {
			if p := recover(); p != nil {
				log.WithField("panic", p).Error("control: handler panicked")
				if !rw.replied {
					rw.Fail(fmt.Errorf("internal error"))
				}
			}
		}()
		s.handler.Serve(ctx, &req, rw)
	}()
	if !rw.replied {
		rw.Fail(fmt.Errorf("%s: no reply", req.Op))
	}
	rw.Flush()
}

// checkPeer allows root only (the socket is 0600 too).
func checkPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if cred.Uid != 0 {
		return fmt.Errorf("permission denied: uid %d is not root", cred.Uid)
	}
	return nil
}

// StopListening stops accepting connections and removes the socket, but
// leaves the connections being served alone: a handover to a successor
// daemon (imafs upgrade) that listens on the same path. Serve then returns
// nil.
func (s *Server) StopListening() error {
	s.stopped.Store(true)
	return s.ln.Close()
}

// Close stops accepting, ends streams, waits for handlers and removes the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.cancel()
	err := s.ln.Close()
	s.wg.Wait()
	if !s.stopped.Load() {
		os.Remove(s.path)
	}
	return err
}
