package measurelog

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"testing"
)

func TestTemplateNeeds(t *testing.T) {
	tests := []struct {
		template string
		algo     Algo
		want     Needs
		algos    string
	}{
		{TemplateIMA, SHA256, Needs{SHA1: true}, "sha256,sha1"},
		{TemplateIMA, SHA1, Needs{}, "sha1"},
		{TemplateIMA, SHA512, Needs{SHA1: true}, "sha512,sha1"},
		{TemplateIMANG, SHA256, Needs{}, "sha256"},
		{TemplateIMANGv2, SHA256, Needs{}, "sha256"},
		{TemplateIMASig, SHA256, Needs{EVMSig: true}, "sha256"},
		{TemplateIMASigv2, SHA256, Needs{EVMSig: true}, "sha256"},
		{TemplateIMABuf, SHA256, Needs{}, "sha256"},
		{TemplateIMAModsig, SHA256, Needs{EVMSig: true}, "sha256"},
		{TemplateEVMSig, SHA256, Needs{EVMSig: true, Xattrs: true}, "sha256"},
		{TemplateIMANS, SHA256, Needs{}, "sha256"},
		{"d|n-ng|xattrnames", SHA256, Needs{SHA1: true, Xattrs: true}, "sha256,sha1"},
	}
	for _, tc := range tests {
		t.Run(tc.template+"/"+tc.algo.String(), func(t *testing.T) {
			got, err := TemplateNeeds(tc.template, tc.algo)
			if err != nil || got != tc.want {
				t.Errorf("TemplateNeeds = %+v, %v; want %+v", got, err, tc.want)
			}
			algos, err := HashAlgos(tc.template, tc.algo)
			var names []string
			for _, a := range algos {
				names = append(names, a.String())
			}
			if err != nil || strings.Join(names, ",") != tc.algos {
				t.Errorf("HashAlgos = %v, %v; want %s", names, err, tc.algos)
			}
		})
	}
	if _, err := TemplateNeeds("ima-nope", SHA256); err == nil {
		t.Error("TemplateNeeds of an unknown template: no error")
	}
}

// kfield is one field as the kernel lays it out in the template data: a
// little-endian u32 length, then the data.
func kfield(b []byte) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(b))), b...)
}

func kcat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestTemplateKernelLayout builds one file measurement per template the
// policy accepts and checks its binary record byte for byte against the
// layout the kernel writes (ima_measurements_show over the fields' init
// functions, spelled out here from ima_template_lib.c and ima_fs.c), and
// its template digest against ima_calc_field_array_hash.
func TestTemplateKernelLayout(t *testing.T) {
	content := []byte("#!/bin/sh\necho measured\n")
	d256 := sha256.Sum256(content)
	d1 := sha1.Sum(content)
	sig := []byte{0x03, 0x02, 0x04, 0x11, 0x22}
	evm := []byte{0x05, 0x02, 0x04, 0x33}
	caps := []byte{0x01, 0x00, 0x00, 0x02}
	m := Measurement{
		FileDigest: d256[:], FileAlgo: SHA256, DigestSHA1: d1[:], Name: "/bin/t x",
		Sig: sig, EVMSig: evm, Namespace: "c1", UID: 1000, GID: 1001, Mode: 0o100755,
		Xattrs: []Xattr{{"security.ima", sig}, {"security.capability", caps}},
	}
	name := []byte("/bin/t_x\x00")
	dng := kcat([]byte("sha256:\x00"), d256[:])
	dngv2 := kcat([]byte("ima:sha256:\x00"), d256[:])
	empty := kfield(nil)
	u32 := func(v uint32) []byte { return kfield(binary.LittleEndian.AppendUint32(nil, v)) }
	tests := []struct {
		template string
		m        Measurement
		data     []byte // template data (for ima: what follows the template name)
		ascii    string // fields of the ascii line
	}{
		{TemplateIMA, m, kcat(d1[:], kfield([]byte("/bin/t_x"))), "ima %x /bin/t_x"},
		{TemplateIMANG, m, kcat(kfield(dng), kfield(name)), "ima-ng sha256:%x /bin/t_x"},
		{TemplateIMANGv2, m, kcat(kfield(dngv2), kfield(name)), "ima-ngv2 ima:sha256:%x /bin/t_x"},
		{TemplateIMASig, m, kcat(kfield(dng), kfield(name), kfield(sig)), "ima-sig sha256:%x /bin/t_x 0302041122"},
		{TemplateIMASigv2, m, kcat(kfield(dngv2), kfield(name), kfield(sig)), "ima-sigv2 ima:sha256:%x /bin/t_x 0302041122"},
		// A file hook's event has no buffer: ima_eventbuf_init leaves buf empty.
		{TemplateIMABuf, m, kcat(kfield(dng), kfield(name), empty), "ima-buf sha256:%x /bin/t_x "},
		// No appended signature: d-modsig and modsig stay empty.
		{TemplateIMAModsig, m, kcat(kfield(dng), kfield(name), kfield(sig), empty, empty), "ima-modsig sha256:%x /bin/t_x 0302041122  "},
		{TemplateEVMSig, m, kcat(kfield(dng), kfield(name), kfield(evm),
			kfield([]byte("security.ima|security.capability\x00")),
			kfield([]byte{5, 0, 0, 0, 4, 0, 0, 0}), kfield(kcat(sig, caps)),
			u32(1000), u32(1001), kfield([]byte{0xed, 0x81})),
			"evm-sig sha256:%x /bin/t_x 05020433 security.ima|security.capability 0500000004000000 030204112201000002 1000 1001 33261"},
		// Without security.evm or any protected attribute, the evm-sig
		// fields the kernel reads from the file are empty.
		{TemplateEVMSig, Measurement{FileDigest: d256[:], FileAlgo: SHA256, Name: "/bin/t x", UID: 0, GID: 0, Mode: 0o100644},
			kcat(kfield(dng), kfield(name), empty, empty, empty, empty, u32(0), u32(0), kfield([]byte{0xa4, 0x81})),
			"evm-sig sha256:%x /bin/t_x     0 0 33188"},
		{TemplateIMANS, m, kcat(kfield(dng), kfield(name), kfield([]byte("c1\x00"))), "ima-ns sha256:%x /bin/t_x c1"},
	}
	for _, tc := range tests {
		t.Run(tc.template, func(t *testing.T) {
			e, err := NewEntry(tc.template, 10, tc.m)
			if err != nil {
				t.Fatal(err)
			}
			want := kcat(binary.LittleEndian.AppendUint32(nil, 10), nil)
			ima := tc.template == TemplateIMA
			var hashed []byte
			if ima {
				// ima_calc_field_array_hash: d, then n with its NUL
				// zero-padded to IMA_EVENT_NAME_LEN_MAX + 1.
				hashed = kcat(d1[:], []byte("/bin/t_x"), make([]byte, 256-len("/bin/t_x")))
			} else {
				hashed = tc.data
			}
			td := sha1.Sum(hashed)
			want = kcat(want, td[:], kfield([]byte(tc.template)))
			if !ima {
				want = append(want, binary.LittleEndian.AppendUint32(nil, uint32(len(tc.data)))...)
			}
			want = append(want, tc.data...)
			if got := e.AppendBinary(nil, SHA1); !bytes.Equal(got, want) {
				t.Errorf("binary record\n got %x\nwant %x", got, want)
			}
			digest := d256[:]
			if ima {
				digest = d1[:]
			}
			if got, wantASCII := fieldsASCII(e), strings.Replace(tc.ascii, "%x", hexOf(digest), 1); got != wantASCII {
				t.Errorf("ascii\n got %q\nwant %q", got, wantASCII)
			}
			back, err := DecodeBinary(e.AppendBinary(nil, SHA256), SHA256)
			if err != nil || len(back) != 1 || !bytes.Equal(back[0].AppendBinary(nil, SHA256), e.AppendBinary(nil, SHA256)) {
				t.Errorf("sha256 round trip: %v", err)
			}
		})
	}
}

func hexOf(b []byte) string { return string(appendHex(nil, b)) }

func TestIMATemplateDigestErrors(t *testing.T) {
	d256 := SHA256.Sum(nil)
	tests := []struct {
		name string
		m    Measurement
		want string
	}{
		{"no sha1 beside a sha256", Measurement{FileDigest: d256, FileAlgo: SHA256}, "no sha1 digest"},
		{"a sha1 of the wrong size", Measurement{FileDigest: d256, FileAlgo: SHA256, DigestSHA1: d256}, "32 bytes"},
		{"a sha1 file digest of the wrong size", Measurement{FileDigest: d256, FileAlgo: SHA1}, "32 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewEntry(TemplateIMA, 10, tc.m); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewEntry = %v; want an error with %q", err, tc.want)
			}
		})
	}
	// A violation needs no digest at all: 20 zero bytes.
	v, err := NewViolation(TemplateIMA, 10, "/f", SHA256)
	if err != nil || !bytes.Equal(v.Fields[0], make([]byte, 20)) {
		t.Errorf("ima violation = %v, %v", v, err)
	}
}

// TestNewFileViolation: a violation record keeps what the kernel reads
// from the file for it (ima_add_violation passes the file): the portable
// EVM signature in sig and evmsig, the xattrs, the inode fields, the
// namespace; the digests are zeros and security.ima is not shown.
func TestNewFileViolation(t *testing.T) {
	evm := []byte{0x05, 0x02, 0xcc}
	m := Measurement{
		Name: "/f", FileAlgo: SHA256, Sig: []byte{0x03, 0x02, 0xaa}, EVMSig: evm, Namespace: "c1",
		UID: 7, GID: 8, Mode: 0o100600, Xattrs: []Xattr{{"security.ima", []byte{0x03, 0x02, 0xaa}}},
	}
	zeros := hexOf(make([]byte, 32))
	tests := []struct {
		template string
		want     string
	}{
		{TemplateIMANG, "ima-ng sha256:" + zeros + " /f"},
		{TemplateIMASig, "ima-sig sha256:" + zeros + " /f 0502cc"},
		{TemplateEVMSig, "evm-sig sha256:" + zeros + " /f 0502cc security.ima 03000000 0302aa 7 8 33152"},
		{TemplateIMANS, "ima-ns sha256:" + zeros + " /f c1"},
		{TemplateIMA, "ima " + hexOf(make([]byte, 20)) + " /f"},
	}
	for _, tc := range tests {
		t.Run(tc.template, func(t *testing.T) {
			e, err := NewFileViolation(tc.template, 10, m)
			if err != nil {
				t.Fatal(err)
			}
			if !e.Violation || !bytes.Equal(e.TemplateDigest(SHA1), make([]byte, 20)) {
				t.Errorf("not a violation record: %+v", e)
			}
			if got := fieldsASCII(e); got != tc.want {
				t.Errorf("violation\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}
