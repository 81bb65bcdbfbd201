package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Client talks to the daemon.
type Client struct {
	Path string
}

// NewClient returns a client of the socket at path (DefaultSocket if empty).
func NewClient(path string) *Client {
	if path == "" {
		path = DefaultSocket
	}
	return &Client{Path: path}
}

func (c *Client) dial(ctx context.Context, req *Request) (net.Conn, *bufio.Reader, *Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect to imafs daemon at %s: %w", c.Path, err)
	}
	b, err := json.Marshal(req)
	if err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("%s: encode request: %w", req.Op, err)
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("%s: send request: %w", req.Op, err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	line, err := br.ReadBytes('\n')
	if err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("%s: read response: %w", req.Op, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("%s: decode response: %w", req.Op, err)
	}
	if !resp.OK {
		conn.Close()
		return nil, nil, nil, &Error{Op: req.Op, Msg: resp.Error, Code: resp.Code}
	}
	return conn, br, &resp, nil
}

// Error is an error the daemon reported.
type Error struct {
	Op   string
	Msg  string
	Code string // the sentinel's code, see CodeOf; "" for none
}

func (e *Error) Error() string { return e.Op + ": " + e.Msg }

// Unwrap returns the sentinel error the daemon's error wrapped (e.g.
// imans.ErrNotFound), or nil.
func (e *Error) Unwrap() error { return errorOf(e.Code) }

// Call sends req and returns the response.
func (c *Client) Call(ctx context.Context, req *Request) (*Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
	}
	conn, _, resp, err := c.dial(ctx, req)
	if err != nil {
		return nil, err
	}
	conn.Close()
	return resp, nil
}

// Stream sends req and copies the raw bytes after the response to w until
// the daemon closes the connection or ctx ends.
func (c *Client) Stream(ctx context.Context, req *Request, w io.Writer) error {
	conn, br, resp, err := c.dial(ctx, req)
	if err != nil {
		return err
	}
	defer conn.Close()
	if !resp.Stream {
		return fmt.Errorf("%s: daemon sent no stream", req.Op)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	_, err = io.Copy(w, br)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %w", req.Op, err)
	}
	return nil
}
