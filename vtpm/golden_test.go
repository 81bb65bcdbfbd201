package vtpm

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/imafs/imafs/measurelog"
)

func readBundle(t testing.TB, path string) *Bundle {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGoldenBundles verifies bundles recorded from real swtpm processes,
// without swtpm: the format and the verifier stay compatible.
func TestGoldenBundles(t *testing.T) {
	nonce := []byte{0xc0, 0xff, 0xee}
	pem, err := os.ReadFile("testdata/ak-a.pem")
	if err != nil {
		t.Fatal(err)
	}
	akA, err := ParseAKPEM(pem)
	if err != nil {
		t.Fatal(err)
	}
	a := readBundle(t, "testdata/bundle-a.json")
	b := readBundle(t, "testdata/bundle-b.json")
	if err := Verify(a, nonce, WithTrustedAK(akA), WithID("a")); err != nil {
		t.Errorf("bundle a: %v", err)
	}
	if err := Verify(b, nonce); err != nil {
		t.Errorf("bundle b, unpinned: %v", err)
	}
	if err := Verify(b, nonce, WithTrustedAK(akA)); !errors.Is(err, ErrUntrustedAK) {
		t.Errorf("bundle b with a's key pinned: %v, want ErrUntrustedAK", err)
	}
	if err := Verify(a, []byte{1}); !errors.Is(err, ErrNonce) {
		t.Errorf("bundle a, other nonce: %v, want ErrNonce", err)
	}
	if _, err := ParseAKPEM([]byte("not pem")); err == nil {
		t.Error("ParseAKPEM(garbage): no error")
	}
}

// fuzzFields are the binary fields of a bundle FuzzVerify replaces: the
// verifier's real inputs, reached without the base64 and JSON around them.
// attested maps a field's bytes to what a quote vouches for in them; a
// bundle whose field was altered so that this changes never verifies. nil:
// nothing is vouched for in the field's bytes as such (ECDSA signatures are
// malleable, a key has several encodings).
var fuzzFields = []struct {
	name     string
	get      func(b *Bundle) []byte
	set      func(b *Bundle, v []byte)
	attested func(v []byte) string
}{
	{"ak_public", func(b *Bundle) []byte { return b.AKPublic }, func(b *Bundle, v []byte) { b.AKPublic = v }, nil},
	{"sha1 quote", func(b *Bundle) []byte { return b.Quotes[0].Quote }, func(b *Bundle, v []byte) { b.Quotes[0].Quote = v }, rawBytes},
	{"sha1 signature", func(b *Bundle) []byte { return b.Quotes[0].Signature }, func(b *Bundle, v []byte) { b.Quotes[0].Signature = v }, nil},
	{"sha256 quote", func(b *Bundle) []byte { return b.Quotes[1].Quote }, func(b *Bundle, v []byte) { b.Quotes[1].Quote = v }, rawBytes},
	{"sha256 signature", func(b *Bundle) []byte { return b.Quotes[1].Signature }, func(b *Bundle, v []byte) { b.Quotes[1].Signature = v }, nil},
	{"list", func(b *Bundle) []byte { return b.List }, func(b *Bundle, v []byte) { b.List = v }, attestedList},
	{"sha256 PCR 10", func(b *Bundle) []byte { return b.PCRs["sha256"][10] }, func(b *Bundle, v []byte) { b.PCRs["sha256"][10] = v }, rawBytes},
}

func rawBytes(v []byte) string { return string(v) }

// attestedList is what PCR replay vouches for in a binary sha1 list, as in
// the kernel's IMA: every entry's PCR and whether it is a violation, and the
// template data of every other entry (with whether the template is "ima",
// whose digest is computed differently). Not vouched for: the template name
// otherwise (it is not hashed), and the template data of a violation, whose
// digest is zero and which extends its PCR with 0xff.. whatever it says.
// A list that does not decode maps to "" (Verify rejects it).
func attestedList(v []byte) string {
	entries, err := measurelog.DecodeBinary(v, measurelog.SHA1)
	if err != nil {
		return ""
	}
	var s []byte
	for _, e := range entries {
		s = binary.LittleEndian.AppendUint32(s, e.PCR)
		switch {
		case e.Violation:
			s = append(s, 'v')
		case e.Template == measurelog.TemplateIMA:
			s = append(s, 'i')
		default:
			s = append(s, 'd')
		}
		if !e.Violation {
			data := e.TemplateData()
			s = binary.LittleEndian.AppendUint32(s, uint32(len(data)))
			s = append(s, data...)
		}
	}
	return "entries:" + string(s)
}

// FuzzVerify: no bundle, however malformed, panics the verifier; every
// failure is a *VerifyError; a bundle whose quotes or PCR values were
// altered, or whose list was altered in what PCR replay vouches for
// (attestedList), never verifies (run:
// go test -run XXX -fuzz FuzzVerify -fuzztime 60s ./vtpm).
//
// field 0 fuzzes the bundle's JSON; field i > 0 replaces fuzzFields[i-1] of
// testdata/bundle-small.json (6 entries: ima-ng, ima-ns, a violation, PCRs
// 10 and 11; it passes every check). Inputs are kept small on purpose: the
// fuzzer minimizes every input that finds new coverage, which takes up to
// -fuzzminimizetime (60 s) for an input of a few kB and fuzzes nothing
// meanwhile; seeded with the 14 kB bundles it ran ~10 executions in 10 s.
// Those bundles are verified by TestGoldenBundles.
func FuzzVerify(f *testing.F) {
	small, err := os.ReadFile("testdata/bundle-small.json")
	if err != nil {
		f.Fatal(err)
	}
	base, err := ParseBundle(small)
	if err != nil {
		f.Fatal(err)
	}
	nonce := []byte{0xc0, 0xff, 0xee}
	if err := Verify(base, nonce); err != nil {
		f.Fatalf("testdata/bundle-small.json: %v", err)
	}
	f.Add(uint8(0), []byte(`{"version":1,"nonce":"c0ffee","quotes":[{"bank":"sha1"}]}`))
	for i, fld := range fuzzFields {
		f.Add(uint8(i+1), append([]byte(nil), fld.get(base)...))
	}
	pem, err := os.ReadFile("testdata/ak-a.pem")
	if err != nil {
		f.Fatal(err)
	}
	akA, err := ParseAKPEM(pem)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, field uint8, data []byte) {
		var b *Bundle
		mustFail := false
		if k := int(field) % (len(fuzzFields) + 1); k == 0 {
			if b, err = ParseBundle(data); err != nil {
				return
			}
		} else {
			if b, err = ParseBundle(small); err != nil {
				t.Fatal(err)
			}
			fld := fuzzFields[k-1]
			mustFail = fld.attested != nil && fld.attested(fld.get(b)) != fld.attested(data)
			fld.set(b, data)
		}
		for _, opts := range [][]VerifyOption{nil, {WithTrustedAK(akA)}} {
			err := Verify(b, nonce, opts...)
			var ve *VerifyError
			if err != nil && !errors.As(err, &ve) {
				t.Fatalf("Verify failed with %T %v, not a *VerifyError", err, err)
			}
			if err == nil && mustFail {
				t.Fatalf("bundle with %s altered to %x verifies", fuzzFields[int(field)%(len(fuzzFields)+1)-1].name, data)
			}
		}
	})
}
