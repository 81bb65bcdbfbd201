package measurelog

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// fieldsASCII returns what follows the template digest in e's sha1 ascii line.
func fieldsASCII(e *Entry) string {
	line := string(e.AppendASCII(nil, SHA1))
	// "10 <40 hex> <template> <fields...>\n"
	return strings.TrimSuffix(line[3+40+1:], "\n")
}

func TestNewEntryFields(t *testing.T) {
	d256 := SHA256.Sum([]byte("x"))
	h256 := hex.EncodeToString(d256)
	d1 := SHA1.Sum([]byte("x"))
	h1 := hex.EncodeToString(d1)
	sig := []byte{0x03, 0x02, 0x04, 0xaa, 0xbb}
	hashOnly := []byte{0x04, 0x01, 0x02}
	evm := []byte{0x05, 0x02, 0xcc}
	long := "/d/" + strings.Repeat("a", 250) + "/file name"
	tests := []struct {
		name     string
		template string
		m        Measurement
		want     string // ascii after the template digest
	}{
		{"ima-ng", TemplateIMANG, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/bin/sh"}, "ima-ng sha256:" + h256 + " /bin/sh"},
		{"ima-ng sha1", TemplateIMANG, Measurement{FileDigest: d1, FileAlgo: SHA1, Name: "/bin/sh"}, "ima-ng sha1:" + h1 + " /bin/sh"},
		{"spaces become underscores, tabs stay", TemplateIMANG, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/a b/c\td"}, "ima-ng sha256:" + h256 + " /a_b/c\td"},
		{"n-ng has no length limit", TemplateIMANG, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: long}, "ima-ng sha256:" + h256 + " " + strings.ReplaceAll(long, " ", "_")},
		{"ima keeps 255 bytes", TemplateIMA, Measurement{FileDigest: d1, FileAlgo: SHA1, Name: "/" + strings.Repeat("b", 254)}, "ima " + h1 + " /" + strings.Repeat("b", 254)},
		{"ima reduces 256+ to the file name", TemplateIMA, Measurement{FileDigest: d1, FileAlgo: SHA1, Name: long}, "ima " + h1 + " file_name"},
		{"ima truncates a long name without slash", TemplateIMA, Measurement{FileDigest: d1, FileAlgo: SHA1, Name: strings.Repeat("c", 300)}, "ima " + h1 + " " + strings.Repeat("c", 255)},
		{"ima-sig keeps a signature", TemplateIMASig, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/f", Sig: sig}, "ima-sig sha256:" + h256 + " /f 03020" + "4aabb"},
		{"ima-sig drops a hash xattr", TemplateIMASig, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/f", Sig: hashOnly}, "ima-sig sha256:" + h256 + " /f "},
		{"ima-sig falls back to a portable evm signature", TemplateIMASig, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/f", Sig: hashOnly, EVMSig: evm}, "ima-sig sha256:" + h256 + " /f 0502cc"},
		{"ima-ngv2", TemplateIMANGv2, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/f"}, "ima-ngv2 ima:sha256:" + h256 + " /f"},
		{"ima-sigv2 verity", TemplateIMASigv2, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/f", Verity: true, Sig: sig}, "ima-sigv2 verity:sha256:" + h256 + " /f 030204aabb"},
		{"ima-buf", TemplateIMABuf, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "kexec-cmdline", Buf: []byte("ro quiet")}, "ima-buf sha256:" + h256 + " kexec-cmdline " + hex.EncodeToString([]byte("ro quiet"))},
		{"ima-modsig without modsig", TemplateIMAModsig, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/m.ko"}, "ima-modsig sha256:" + h256 + " /m.ko   "},
		{"ima-modsig with modsig", TemplateIMAModsig, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/m.ko", ModSig: []byte{1, 2}, ModSigDigest: d1, ModSigAlgo: SHA1}, "ima-modsig sha256:" + h256 + " /m.ko  sha1:" + h1 + " 0102"},
		{"ima-ns in a container", TemplateIMANS, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/f", Namespace: "c0ffee"}, "ima-ns sha256:" + h256 + " /f c0ffee"},
		{"ima-ns on the host", TemplateIMANS, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/f"}, "ima-ns sha256:" + h256 + " /f "},
		{"custom format with inode fields", "d-ng|n-ng|iuid|igid|imode", Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/f", UID: 1000, GID: 100, Mode: 0o100644}, "d-ng|n-ng|iuid|igid|imode sha256:" + h256 + " /f 1000 100 33188"},
		{"inode fields empty without an inode", "d-ng|n-ng|iuid|igid|imode", Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/f", UID: 1000}, "d-ng|n-ng|iuid|igid|imode sha256:" + h256 + " /f   "},
		{"evm-sig", TemplateEVMSig, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "/f", EVMSig: evm, UID: 0, GID: 0, Mode: 0o100755}, "evm-sig sha256:" + h256 + " /f 0502cc    0 0 33261"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEntry(tc.template, 10, tc.m)
			if err != nil {
				t.Fatal(err)
			}
			if got := fieldsASCII(e); got != tc.want {
				t.Errorf("ascii fields\n got %q\nwant %q", got, tc.want)
			}
			// Every entry survives its own binary encoding in every bank.
			for _, bank := range Banks {
				back, err := DecodeBinary(e.AppendBinary(nil, bank), bank)
				if err != nil || len(back) != 1 || !bytes.Equal(back[0].AppendASCII(nil, bank), e.AppendASCII(nil, bank)) {
					t.Errorf("%s round trip: %v", bank, err)
				}
			}
			algo, digest, err := e.FileDigest()
			if err != nil || algo != tc.m.FileAlgo.String() || !bytes.Equal(digest, tc.m.FileDigest) {
				t.Errorf("FileDigest = %s %x %v", algo, digest, err)
			}
			if !strings.Contains(strings.ReplaceAll(tc.m.Name, " ", "_"), e.Name()) || e.Name() == "" {
				t.Errorf("Name = %q", e.Name())
			}
		})
	}
}

func TestNewEntryErrors(t *testing.T) {
	d256 := SHA256.Sum(nil)
	tests := []struct {
		name     string
		template string
		pcr      uint32
		m        Measurement
		reason   string
	}{
		{"unknown template", "ima-xx", 10, Measurement{FileDigest: d256, FileAlgo: SHA256}, "unknown"},
		{"unknown field in a format", "d-ng|n-ng|foo", 10, Measurement{FileDigest: d256, FileAlgo: SHA256}, "foo"},
		{"pcr out of range", TemplateIMANG, 64, Measurement{FileDigest: d256, FileAlgo: SHA256}, "pcr 64"},
		{"digest size", TemplateIMANG, 10, Measurement{FileDigest: d256[:20], FileAlgo: SHA256}, "20 bytes"},
		{"no algorithm", TemplateIMANG, 10, Measurement{FileDigest: d256}, "unknown hash algorithm"},
		{"ima needs sha1", TemplateIMA, 10, Measurement{FileDigest: d256, FileAlgo: SHA256}, "sha1"},
		{"NUL in name", TemplateIMANG, 10, Measurement{FileDigest: d256, FileAlgo: SHA256, Name: "a\x00b"}, "NUL"},
		{"NUL in namespace", TemplateIMANS, 10, Measurement{FileDigest: d256, FileAlgo: SHA256, Namespace: "a\x00"}, "NUL"},
		{"modsig digest", TemplateIMAModsig, 10, Measurement{FileDigest: d256, FileAlgo: SHA256, ModSig: []byte{1}}, "d-modsig"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEntry(tc.template, tc.pcr, tc.m)
			if err == nil || e != nil || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("NewEntry = %v, %v; want error containing %q", e, err, tc.reason)
			}
		})
	}
}

func TestViolationAndBootAggregate(t *testing.T) {
	tests := []struct {
		template string
		algo     Algo
		want     string
	}{
		{TemplateIMA, SHA1, "ima " + strings.Repeat("0", 40) + " /tmp/f"},
		{TemplateIMANG, SHA256, "ima-ng sha256:" + strings.Repeat("0", 64) + " /tmp/f"},
		{TemplateIMANGv2, SHA512, "ima-ngv2 ima:sha512:" + strings.Repeat("0", 128) + " /tmp/f"},
		{TemplateIMASig, SHA1, "ima-sig sha1:" + strings.Repeat("0", 40) + " /tmp/f "},
		{TemplateIMANS, SHA256, "ima-ns sha256:" + strings.Repeat("0", 64) + " /tmp/f "},
	}
	for _, tc := range tests {
		t.Run(tc.template, func(t *testing.T) {
			v, err := NewViolation(tc.template, 10, "/tmp/f", tc.algo)
			if err != nil {
				t.Fatal(err)
			}
			if got := fieldsASCII(v); got != tc.want {
				t.Errorf("got %q want %q", got, tc.want)
			}
			for _, bank := range Banks {
				if d := v.TemplateDigest(bank); len(d) != bank.Size() || !allZero(d) {
					t.Errorf("%s digest %x", bank, d)
				}
			}
			back, err := DecodeBinary(v.AppendBinary(nil, SHA256), SHA256)
			if err != nil || !back[0].Violation {
				t.Errorf("decoded violation: %v", err)
			}
			b, err := NewBootAggregate(tc.template, nil, tc.algo)
			if err != nil {
				t.Fatal(err)
			}
			if b.PCR != 10 || b.Name() != BootAggregateName || b.Violation || allZero(b.TemplateDigest(SHA1)) {
				t.Errorf("boot aggregate %+v", b)
			}
			if _, d, _ := b.FileDigest(); len(d) != tc.algo.Size() || !allZero(d) {
				t.Errorf("boot aggregate digest %x", d)
			}
		})
	}
	if _, err := NewBootAggregate(TemplateIMA, SHA256.Sum(nil), SHA256); err == nil {
		t.Error("sha256 boot aggregate accepted for the ima template")
	}
}

func TestAlgoAndTemplates(t *testing.T) {
	for _, a := range []Algo{SHA1, SHA256, SHA384, SHA512, SHA224, MD5} {
		b, err := ParseAlgo(a.String())
		if err != nil || b != a || len(a.Sum(nil)) != a.Size() || a.New().Size() != a.Size() {
			t.Errorf("%s: %v", a, err)
		}
	}
	if _, err := ParseAlgo("sha3"); err == nil {
		t.Error("sha3 parsed")
	}
	if Algo(99).Size() != 0 || Algo(99).Valid() || MD5.IsBank() {
		t.Error("bad algo validity")
	}
	want := map[string]string{
		"ima": "d|n", "ima-ng": "d-ng|n-ng", "ima-sig": "d-ng|n-ng|sig", "ima-buf": "d-ng|n-ng|buf",
		"ima-ngv2": "d-ngv2|n-ng", "ima-sigv2": "d-ngv2|n-ng|sig", "ima-modsig": "d-ng|n-ng|sig|d-modsig|modsig",
		"evm-sig": "d-ng|n-ng|evmsig|xattrnames|xattrlengths|xattrvalues|iuid|igid|imode", "ima-ns": "d-ng|n-ng|ns",
		"ima-nsreg": "d-ng|n-ng|ns",
	}
	for _, name := range Templates() {
		tm, err := LookupTemplate(name)
		if err != nil || strings.Join(tm.Fields, "|") != want[name] {
			t.Errorf("%s: %v %v", name, tm, err)
		}
		delete(want, name)
	}
	if len(want) != 0 {
		t.Errorf("templates missing: %v", want)
	}
	if tm, err := LookupTemplate("d-ng|n-ng|iuid"); err != nil || len(tm.Fields) != 3 {
		t.Errorf("custom format: %v %v", tm, err)
	}
}
