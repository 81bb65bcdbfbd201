package vtpm

import (
	"errors"
	"os"
	"testing"
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

// FuzzVerify: no bundle, however malformed, panics the verifier (run:
// go test -run XXX -fuzz FuzzVerify -fuzztime 60s ./vtpm).
func FuzzVerify(f *testing.F) {
	for _, p := range []string{"testdata/bundle-a.json", "testdata/bundle-b.json"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"version":1,"nonce":"c0ffee","quotes":[{"bank":"sha1"}]}`))
	pem, err := os.ReadFile("testdata/ak-a.pem")
	if err != nil {
		f.Fatal(err)
	}
	akA, err := ParseAKPEM(pem)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBundle(data)
		if err != nil {
			return
		}
		_ = Verify(b, []byte{0xc0, 0xff, 0xee}, WithTrustedAK(akA))
	})
}
