package vtpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// tpmHeaderSize is the size of a TPM 2.0 command or response header:
// tag (u16), size (u32), code (u32).
const tpmHeaderSize = 10

// maxTPMMessage bounds a response we are willing to buffer; swtpm's largest
// responses are a few kilobytes.
const maxTPMMessage = 1 << 20

// commandTimeout bounds one command's round trip so that a wedged swtpm
// never hangs the daemon. Key generation is the slowest command we send.
const commandTimeout = 60 * time.Second

// msgConn turns a stream connection to a TPM (swtpm's raw unixio socket)
// into the message-oriented io.ReadWriteCloser go-tpm expects: go-tpm reads
// a whole response with a single Read, which a stream socket does not
// promise. Read returns (parts of) exactly one response at a time.
//
// go-tpm's own socket transport (tpmutil.EmulatorReadWriteCloser) dials once
// per command; swtpm serves one client at a time, so we keep one
// connection for the TPM's lifetime instead.
type msgConn struct {
	conn    net.Conn
	pending []byte // rest of the current response not yet read
}

var _ io.ReadWriteCloser = (*msgConn)(nil)

func dialTPMSocket(path string) (*msgConn, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &msgConn{conn: c}, nil
}

// Write sends one complete command.
func (m *msgConn) Write(p []byte) (int, error) {
	if len(m.pending) > 0 {
		return 0, errors.New("tpm connection: command written before the previous response was read")
	}
	if err := m.conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return 0, err
	}
	n, err := m.conn.Write(p)
	if err != nil {
		return n, fmt.Errorf("tpm connection: write command: %w", err)
	}
	return n, nil
}

// Read returns the response to the last command. The first Read collects
// the whole response (header first, then as many bytes as its size field
// says); later Reads return what did not fit into p.
func (m *msgConn) Read(p []byte) (int, error) {
	if len(m.pending) == 0 {
		var hdr [tpmHeaderSize]byte
		if _, err := io.ReadFull(m.conn, hdr[:]); err != nil {
			return 0, fmt.Errorf("tpm connection: read response header: %w", err)
		}
		size := binary.BigEndian.Uint32(hdr[2:6])
		if size < tpmHeaderSize || size > maxTPMMessage {
			return 0, fmt.Errorf("tpm connection: response size %d out of range", size)
		}
		msg := make([]byte, size)
		copy(msg, hdr[:])
		if _, err := io.ReadFull(m.conn, msg[tpmHeaderSize:]); err != nil {
			return 0, fmt.Errorf("tpm connection: read response body: %w", err)
		}
		m.pending = msg
	}
	n := copy(p, m.pending)
	m.pending = m.pending[n:]
	return n, nil
}

// Close closes the connection; swtpm then accepts its next client.
func (m *msgConn) Close() error { return m.conn.Close() }
