package vtpm

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// TestMsgConnReassembles: a response arriving in pieces comes out of one
// Read whole, as go-tpm needs; a small buffer gets the rest next time.
func TestMsgConnReassembles(t *testing.T) {
	resp := make([]byte, 300)
	binary.BigEndian.PutUint16(resp[0:2], 0x8001)
	binary.BigEndian.PutUint32(resp[2:6], uint32(len(resp)))
	for i := 10; i < len(resp); i++ {
		resp[i] = byte(i)
	}
	tests := []struct {
		name   string
		pieces []int // sizes the server writes
		bufs   []int // sizes of the client's Read buffers
	}{
		{"one piece", []int{300}, []int{4096}},
		{"header split", []int{3, 7, 290}, []int{4096}},
		{"byte by byte start", []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 290}, []int{4096}},
		{"small reads", []int{300}, []int{100, 100, 100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cli, srv := net.Pipe()
			defer cli.Close()
			m := &msgConn{conn: cli}
			go func() {
				cmd := make([]byte, 12)
				if _, err := srv.Read(cmd); err != nil {
					return
				}
				off := 0
				for _, n := range tc.pieces {
					srv.Write(resp[off : off+n])
					off += n
				}
				srv.Close()
			}()
			if _, err := m.Write(make([]byte, 12)); err != nil {
				t.Fatal(err)
			}
			var got []byte
			for _, n := range tc.bufs {
				buf := make([]byte, n)
				k, err := m.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, buf[:k]...)
			}
			if !bytes.Equal(got, resp) {
				t.Errorf("read %d bytes, differ from the %d-byte response", len(got), len(resp))
			}
		})
	}
}

func TestMsgConnBadSize(t *testing.T) {
	cli, srv := net.Pipe()
	defer cli.Close()
	go func() {
		hdr := make([]byte, 10)
		binary.BigEndian.PutUint32(hdr[2:6], 5) // shorter than a header
		srv.Write(hdr)
		srv.Close()
	}()
	m := &msgConn{conn: cli}
	if _, err := m.Read(make([]byte, 100)); err == nil {
		t.Error("response with size 5: no error")
	}
}
