package measurelog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func goldenNG(t testing.TB) []byte {
	t.Helper()
	b, err := readFileTB("ngsha256", "binary_runtime_measurements")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recordEnds returns the end offset of every record of a sha1 binary list.
func recordEnds(t testing.TB, data []byte) []int {
	t.Helper()
	entries, err := DecodeBinary(data, SHA1)
	if err != nil {
		t.Fatal(err)
	}
	var ends []int
	off := 0
	for _, e := range entries {
		off += len(e.AppendBinary(nil, SHA1))
		ends = append(ends, off)
	}
	return ends
}

func TestDecodeBinaryErrors(t *testing.T) {
	data := goldenNG(t)
	ends := recordEnds(t, data)
	second := ends[0] // offset of record 1
	le := binary.LittleEndian
	mutate := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), data...))
	}
	tests := []struct {
		name    string
		data    []byte
		entries int
		offset  int64
		torn    bool
		reason  string
	}{
		{"cut inside pcr", data[:second+2], 1, int64(second), true, "pcr needs 4 bytes, 2 present"},
		{"cut inside digest", data[:second+10], 1, int64(second), true, "template digest"},
		{"cut inside template data", data[:ends[5]-3], 5, int64(ends[4]), true, "template data needs"},
		{"cut at record end", data[:ends[3]], 4, -1, false, ""},
		{"pcr out of range", mutate(func(b []byte) []byte { le.PutUint32(b[second:], 64); return b }), 1, int64(second), false, "pcr 64 out of range"},
		{"zero template name length", mutate(func(b []byte) []byte { le.PutUint32(b[second+24:], 0); return b }), 1, int64(second), false, "template name length 0"},
		{"huge template name length", mutate(func(b []byte) []byte { le.PutUint32(b[second+24:], 1<<31); return b }), 1, int64(second), false, "out of range"},
		{"unknown template", mutate(func(b []byte) []byte { copy(b[second+28:], "imx-ng"); return b }), 1, int64(second), false, "unknown"},
		{"unprintable template name", mutate(func(b []byte) []byte { b[second+29] = 0; return b }), 1, int64(second), false, "not printable"},
		{"huge template data length", mutate(func(b []byte) []byte { le.PutUint32(b[second+34:], 0xffffffff); return b }), 1, int64(second), false, "exceeds"},
		{"field longer than template data", mutate(func(b []byte) []byte { le.PutUint32(b[second+38:], 1000); return b }), 1, int64(second), false, "field 0 claims 1000 bytes"},
		{"tampered name", mutate(func(b []byte) []byte { b[ends[1]-3]++; return b }), 1, int64(second), false, "template digest"},
		{"garbage tail", append(append([]byte(nil), data...), bytes.Repeat([]byte{0xa5}, 100)...), len(ends), int64(len(data)), false, "pcr"},
		{"zero tail", append(append([]byte(nil), data...), make([]byte, 64)...), len(ends), int64(len(data)), false, "template name length 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := DecodeBinary(tc.data, SHA1)
			if len(entries) != tc.entries {
				t.Errorf("%d entries, want %d", len(entries), tc.entries)
			}
			if tc.offset < 0 {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v is not a *DecodeError", err)
			}
			if de.Offset != tc.offset || de.Torn != tc.torn || !strings.Contains(de.Reason, tc.reason) {
				t.Errorf("got %+v, want offset %d torn %v reason containing %q", de, tc.offset, tc.torn, tc.reason)
			}
			if !strings.HasPrefix(err.Error(), "offset ") {
				t.Errorf("Error() = %q", err)
			}
			// The streaming decoder agrees.
			d := NewDecoder(bytes.NewReader(tc.data), SHA1)
			n := 0
			var serr error
			for {
				_, serr = d.Next()
				if serr != nil {
					break
				}
				n++
			}
			var sde *DecodeError
			if n != tc.entries || !errors.As(serr, &sde) || sde.Offset != de.Offset || sde.Torn != de.Torn {
				t.Errorf("Decoder: %d entries, %v; DecodeBinary: %d, %v", n, serr, len(entries), err)
			}
		})
	}
}

func TestDecodeBinaryBadBank(t *testing.T) {
	if _, err := DecodeBinary(goldenNG(t), MD5); err == nil {
		t.Error("md5 accepted as a bank")
	}
	// A sha1 list read as sha256 is corrupt, never a panic.
	if _, err := DecodeBinary(goldenNG(t), SHA256); err == nil {
		t.Error("sha1 list decoded as sha256")
	}
}

// slowReader hands out at most one byte per Read, and reports io.EOF at
// the current end of data, which can grow (a file being appended to).
type slowReader struct {
	data []byte
	off  int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	p[0] = r.data[r.off]
	r.off++
	return 1, nil
}

// TestDecoderTail reads a list that grows while it is being read: a torn
// record is reported, then completed by a later Next.
func TestDecoderTail(t *testing.T) {
	data := goldenNG(t)
	ends := recordEnds(t, data)
	r := &slowReader{data: data[:ends[2]+5]}
	d := NewDecoder(r, SHA1)
	for i := 0; i < 3; i++ {
		if _, err := d.Next(); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	_, err := d.Next()
	var de *DecodeError
	if !errors.As(err, &de) || !de.Torn || de.Offset != int64(ends[2]) {
		t.Fatalf("torn record: %v", err)
	}
	r.data = data // the writer finished
	n := 3
	for {
		_, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after growth: %v", err)
		}
		n++
	}
	if n != len(ends) || d.Offset() != int64(len(data)) {
		t.Errorf("%d entries to offset %d, want %d to %d", n, d.Offset(), len(ends), len(data))
	}
}

// TestDecoderBoundedAllocation: a record claiming 16 MiB of template data
// followed by a few bytes must not allocate megabytes.
func TestDecoderBoundedAllocation(t *testing.T) {
	var rec []byte
	rec = binary.LittleEndian.AppendUint32(rec, 10)
	rec = append(rec, bytes.Repeat([]byte{1}, 20)...)
	rec = binary.LittleEndian.AppendUint32(rec, 6)
	rec = append(rec, "ima-ng"...)
	rec = binary.LittleEndian.AppendUint32(rec, MaxTemplateDataLen)
	rec = append(rec, "short"...)
	allocs := testing.AllocsPerRun(5, func() {
		d := NewDecoder(bytes.NewReader(rec), SHA1)
		if _, err := d.Next(); err == nil {
			t.Fatal("no error")
		}
	})
	var ms1, ms2 runtimeMem
	ms1.read()
	d := NewDecoder(bytes.NewReader(rec), SHA1)
	_, err := d.Next()
	ms2.read()
	var de *DecodeError
	if !errors.As(err, &de) || !de.Torn {
		t.Fatalf("want a torn record, got %v", err)
	}
	if grew := ms2.total - ms1.total; grew > 1<<20 {
		t.Errorf("decoding a 60-byte stream allocated %d bytes (%v allocs/run)", grew, allocs)
	}
}
