package measurelog

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

// FuzzDecodeBinary feeds arbitrary bytes to DecodeBinary and the streaming
// Decoder in every bank: no panic, and whatever decodes re-encodes to
// exactly the bytes it came from, up to the reported error offset.
// Seeds: testdata/fuzz/FuzzDecodeBinary (kernel lists, cut and damaged).
func FuzzDecodeBinary(f *testing.F) {
	for _, g := range goldenDirs {
		for _, file := range []string{"binary_runtime_measurements", "binary_runtime_measurements_sha256"} {
			if b, err := readFileTB(g.name, file); err == nil {
				f.Add(b[:min(len(b), 600)], uint8(len(file)%2))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, bankSel uint8) {
		bank := Banks[int(bankSel)%len(Banks)]
		entries, err := DecodeBinary(data, bank)
		var enc []byte
		for _, e := range entries {
			enc = e.AppendBinary(enc, bank)
			e.AppendASCII(nil, bank)
			e.FileDigest()
			e.Name()
		}
		if err == nil {
			if !bytes.Equal(enc, data) {
				t.Fatalf("re-encoding differs from the input")
			}
		} else {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v is not a *DecodeError", err)
			}
			if de.Offset != int64(len(enc)) || !bytes.Equal(enc, data[:de.Offset]) {
				t.Fatalf("error at %d, but the entries before it encode to %d bytes", de.Offset, len(enc))
			}
		}
		d := NewDecoder(bytes.NewReader(data), bank)
		n := 0
		for {
			_, serr := d.Next()
			if serr == io.EOF {
				if err != nil {
					t.Fatalf("Decoder reached EOF, DecodeBinary: %v", err)
				}
				break
			}
			if serr != nil {
				var a, b *DecodeError
				if !errors.As(serr, &a) || !errors.As(err, &b) || a.Offset != b.Offset || (!a.Torn && b.Torn) {
					// (A Decoder reads a growing stream: it may call torn what
					// DecodeBinary, seeing a valid record after it, calls corrupt.)
					t.Fatalf("Decoder: %v; DecodeBinary: %v", serr, err)
				}
				break
			}
			n++
		}
		if n != len(entries) {
			t.Fatalf("Decoder read %d entries, DecodeBinary %d", n, len(entries))
		}
	})
}

// FuzzASCIILen: asciiLen, which a journal-backed list uses for its offsets
// without rendering, equals the length of appendASCII's rendering, for
// every template and any field bytes (digests with and without an
// algorithm prefix, strings with NULs, numbers of any size).
func FuzzASCIILen(f *testing.F) {
	names := make([]string, 0, len(templates))
	for name := range templates {
		names = append(names, name)
	}
	slices.Sort(names)
	f.Add(uint8(0), uint32(10), []byte("sha256:\x00\x01\x02|/usr/bin/true|\x05\x00\x00\x00"))
	f.Add(uint8(3), uint32(3), []byte(":\x00|x\x00y|\x01|\x01\x02|\x01\x02\x03\x04|12345678"))
	f.Add(uint8(5), uint32(0), []byte("|||"))
	f.Fuzz(func(t *testing.T, sel uint8, pcr uint32, data []byte) {
		tmpl := templates[names[int(sel)%len(names)]]
		fields := bytes.Split(data, []byte("|"))
		digest := make([]byte, SHA1.Size())
		got := asciiLen(pcr, tmpl, fields) + 2*SHA1.Size()
		if want := len(appendASCII(nil, pcr, tmpl, fields, digest)); got != want {
			t.Fatalf("template %s, fields %q: asciiLen %d, rendering %d bytes", tmpl.name, fields, got, want)
		}
	})
}
