package control

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func serve(t *testing.T, h HandlerFunc) (*Client, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the server accepts root peers only")
	}
	path := filepath.Join(t.TempDir(), "sub", "imafs.sock")
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := Listen(path, h, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return NewClient(path), path
}

func TestCallAndErrors(t *testing.T) {
	c, path := serve(t, func(ctx context.Context, req *Request, rw *ReplyWriter) {
		switch req.Op {
		case OpPs:
			rw.Reply(&Response{Namespaces: []NamespaceInfo{{ID: "host", Entries: 1}}})
		case "fail":
			rw.Fail(errors.New("no such thing"))
		case "panic":
			panic("boom")
		case "silent":
		}
	})
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", st.Mode(), err)
	}
	resp, err := c.Call(context.Background(), &Request{Op: OpPs})
	if err != nil || len(resp.Namespaces) != 1 || resp.Namespaces[0].ID != "host" || !resp.OK {
		t.Fatalf("ps: %+v, %v", resp, err)
	}
	tests := []struct{ op, want string }{
		{"fail", "fail: no such thing"},
		{"panic", "panic: internal error"},
		{"silent", "silent: silent: no reply"},
	}
	for _, tt := range tests {
		_, err := c.Call(context.Background(), &Request{Op: tt.op})
		var cerr *Error
		if !errors.As(err, &cerr) || err.Error() != tt.want {
			t.Errorf("%s: %v, want %q", tt.op, err, tt.want)
		}
	}
	// The daemon survives garbage.
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("{not json\n"))
	b, _ := io.ReadAll(conn)
	conn.Close()
	if !bytes.Contains(b, []byte(`"ok":false`)) || !bytes.Contains(b, []byte("decode request")) {
		t.Errorf("garbage request answered %q", b)
	}
	if _, err := c.Call(context.Background(), &Request{Op: OpPs}); err != nil {
		t.Errorf("after garbage: %v", err)
	}
}

func TestStream(t *testing.T) {
	c, _ := serve(t, func(ctx context.Context, req *Request, rw *ReplyWriter) {
		rw.Reply(&Response{Stream: true})
		rw.Write([]byte("line 1\n"))
		rw.Flush()
		if !req.Follow {
			return
		}
		<-ctx.Done() // until the client hangs up or the server closes
	})
	var out bytes.Buffer
	if err := c.Stream(context.Background(), &Request{Op: OpLog}, &out); err != nil || out.String() != "line 1\n" {
		t.Errorf("stream %q, %v", out.String(), err)
	}
	// The client ends the follow once it has the line (no timing
	// assumption); the deadline only keeps a broken stream from hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out.Reset()
	w := writerFunc(func(p []byte) (int, error) {
		out.Write(p)
		if bytes.HasSuffix(out.Bytes(), []byte("\n")) {
			cancel()
		}
		return len(p), nil
	})
	if err := c.Stream(ctx, &Request{Op: OpLog, Follow: true}, w); err != nil {
		t.Errorf("follow: %v", err)
	}
	if !errors.Is(ctx.Err(), context.Canceled) || out.String() != "line 1\n" {
		t.Errorf("follow ended (%v) with %q", ctx.Err(), out.String())
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestListenRefusesLiveSocket(t *testing.T) {
	_, path := serve(t, func(ctx context.Context, req *Request, rw *ReplyWriter) { rw.Reply(&Response{}) })
	if _, err := Listen(path, HandlerFunc(nil), logrus.New()); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("second Listen: %v", err)
	}
}

func TestNoDaemon(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	if _, err := c.Call(context.Background(), &Request{Op: OpPing}); err == nil || !strings.Contains(err.Error(), "connect to imafs daemon") {
		t.Errorf("no daemon: %v", err)
	}
}

// TestHalfCloseGetsReply: a client that shuts down its sending side after
// the request (socat does at the end of its input; a request may then lack
// its newline) still gets the reply.
func TestHalfCloseGetsReply(t *testing.T) {
	_, path := serve(t, func(ctx context.Context, req *Request, rw *ReplyWriter) {
		time.Sleep(50 * time.Millisecond) // the half-close arrives first
		if ctx.Err() != nil {
			rw.Fail(ctx.Err())
			return
		}
		rw.Reply(&Response{})
	})
	for _, req := range []string{`{"op":"ping"}` + "\n", `{"op":"ping"}`} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.UnixConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || !strings.Contains(line, `"ok":true`) {
			t.Errorf("request %q, then half-close: reply %q, %v", req, line, err)
		}
	}
}
