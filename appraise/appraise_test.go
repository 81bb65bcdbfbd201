package appraise

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// evmctlValue runs evmctl with -n (print the security.ima value instead of
// setting it) and returns the value.
func evmctlValue(t *testing.T, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("evmctl"); err != nil {
		t.Skip("evmctl not installed (Debian package ima-evm-utils)")
	}
	out, err := exec.Command("evmctl", append([]string{}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("evmctl %v: %v\n%s", args, err, out)
	}
	// The value is the longest hex word (evmctl may also print the digest).
	var best []byte
	for _, w := range strings.Fields(string(out)) {
		if b, err := hex.DecodeString(w); err == nil && len(b) > len(best) {
			best = b
		}
	}
	if best == nil {
		t.Fatalf("evmctl %v printed no value: %s", args, out)
	}
	return best
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// keys makes an RSA key with a self-signed certificate, a second RSA key
// (public key only) and an EC P-256 key (public key only) in dir.
func keys(t *testing.T, dir string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	run(t, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", filepath.Join(dir, "rsa.key"),
		"-out", filepath.Join(dir, "rsa.crt"), "-days", "2", "-subj", "/CN=imafs-test")
	run(t, "openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", filepath.Join(dir, "other.key"))
	run(t, "openssl", "pkey", "-in", filepath.Join(dir, "other.key"), "-pubout", "-out", filepath.Join(dir, "other.pub"))
	run(t, "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", filepath.Join(dir, "ec.key"))
	run(t, "openssl", "pkey", "-in", filepath.Join(dir, "ec.key"), "-pubout", "-out", filepath.Join(dir, "ec.pub"))
	run(t, "openssl", "x509", "-in", filepath.Join(dir, "rsa.crt"), "-outform", "DER", "-out", filepath.Join(dir, "rsa.der"))
}

func keyring(t *testing.T, files ...string) *Keyring {
	t.Helper()
	k := &Keyring{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.ParseKeys(data, f); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

func TestVerifyWithEvmctl(t *testing.T) {
	dir := t.TempDir()
	keys(t, dir)
	file := filepath.Join(dir, "payload")
	content := []byte("#!/bin/sh\necho measured\n")
	if err := os.WriteFile(file, content, 0o755); err != nil {
		t.Fatal(err)
	}
	d256 := sha256.Sum256(content)
	d512 := sha512.Sum512(content)
	tampered := sha256.Sum256(append(content, '!'))

	hashV := evmctlValue(t, "ima_hash", "-n", file)
	sigRSA := evmctlValue(t, "ima_sign", "-n", "--key", filepath.Join(dir, "rsa.key"), file)
	sigRSA512 := evmctlValue(t, "ima_sign", "-n", "-a", "sha512", "--key", filepath.Join(dir, "rsa.key"), file)
	sigOther := evmctlValue(t, "ima_sign", "-n", "--key", filepath.Join(dir, "other.key"), file)
	sigEC := evmctlValue(t, "ima_sign", "-n", "--key", filepath.Join(dir, "ec.key"), file)
	badSig := append([]byte(nil), sigRSA...)
	badSig[len(badSig)-1] ^= 1

	trusted := keyring(t, filepath.Join(dir, "rsa.crt"), filepath.Join(dir, "ec.pub"))
	trustedDER := keyring(t, filepath.Join(dir, "rsa.der"))

	for _, tc := range []struct {
		name   string
		xattr  []byte
		digest []byte
		keys   *Keyring
		req    Requirement
		want   Cause // "" = success
	}{
		{"hash ok", hashV, d256[:], trusted, Requirement{}, ""},
		{"hash tampered", hashV, tampered[:], trusted, Requirement{}, CauseInvalidHash},
		{"hash but imasig", hashV, d256[:], trusted, Requirement{Signature: true}, CauseSigRequired},
		{"hash algo not allowed", hashV, d256[:], trusted, Requirement{Algos: []string{"sha512"}}, CauseUnsupported},
		{"rsa sig ok (PEM cert)", sigRSA, d256[:], trusted, Requirement{Signature: true}, ""},
		{"rsa sig ok (DER cert)", sigRSA, d256[:], trustedDER, Requirement{Signature: true}, ""},
		{"rsa sha512 sig ok", sigRSA512, d512[:], trusted, Requirement{Signature: true}, ""},
		{"rsa sig tampered file", sigRSA, tampered[:], trusted, Requirement{Signature: true}, CauseInvalidSig},
		{"rsa sig corrupted", badSig, d256[:], trusted, Requirement{Signature: true}, CauseInvalidSig},
		{"other key", sigOther, d256[:], trusted, Requirement{Signature: true}, CauseUnknownKey},
		{"empty keyring", sigRSA, d256[:], &Keyring{}, Requirement{Signature: true}, CauseUnknownKey},
		{"ec sig ok", sigEC, d256[:], trusted, Requirement{Signature: true}, ""},
		{"no xattr", nil, d256[:], trusted, Requirement{}, CauseMissingHash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v *Value
			if tc.xattr != nil {
				var err error
				if v, err = Parse(tc.xattr); err != nil {
					t.Fatalf("Parse(%x): %v", tc.xattr, err)
				}
			}
			err := Verify(v, tc.digest, tc.keys, tc.req)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if got := CauseOf(err); got != tc.want {
				t.Fatalf("Verify: cause %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

// TestKeyIDMatchesEvmctl checks that our key id equals the one evmctl puts
// in the signature header for a bare public key (no certificate SKID).
func TestKeyIDMatchesEvmctl(t *testing.T) {
	dir := t.TempDir()
	keys(t, dir)
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"other", "ec"} {
		v, err := Parse(evmctlValue(t, "ima_sign", "-n", "--key", filepath.Join(dir, k+".key"), file))
		if err != nil {
			t.Fatal(err)
		}
		kr := keyring(t, filepath.Join(dir, k+".pub"))
		if got := kr.Keys()[0].IDs[0]; got != v.KeyID {
			t.Errorf("%s: KeyID %08x, evmctl wrote %08x", k, got, v.KeyID)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string // hex
	}{
		{"empty", ""},
		{"unknown type", "09aa"},
		{"sha1 short", "01" + strings.Repeat("00", 19)},
		{"ng no algo", "04"},
		{"ng wrong size", "0404" + strings.Repeat("00", 31)},
		{"ng empty digest", "0411"},
		{"sig short header", "030204aabbcc"},
		{"sig size mismatch", "030204aabbccdd0005" + "0102"},
		{"sig zero size", "030204aabbccdd0000"},
		{"sig version 1", "0301"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, _ := hex.DecodeString(tc.raw)
			if v, err := Parse(raw); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%s) = %v, %v; want ErrMalformed", tc.raw, v, err)
			}
		})
	}
	// An unknown hash id parses but cannot be appraised.
	v, err := Parse([]byte{0x04, 17, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.HashAlgo(); CauseOf(err) != CauseUnsupported {
		t.Fatalf("sm3 HashAlgo: %v", err)
	}
}

func TestLoadKeyring(t *testing.T) {
	dir := t.TempDir()
	keys(t, dir)
	kdir := filepath.Join(dir, "keys")
	if err := os.Mkdir(kdir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"rsa.crt", "ec.pub", "rsa.der"} {
		data, _ := os.ReadFile(filepath.Join(dir, f))
		if err := os.WriteFile(filepath.Join(kdir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(kdir, "README"), []byte("ignored"), 0o644)
	k, err := LoadKeyring(kdir)
	if err != nil {
		t.Fatal(err)
	}
	if k.Len() != 3 {
		t.Fatalf("Len = %d, want 3", k.Len())
	}
	if k, err := LoadKeyring(filepath.Join(dir, "missing")); err != nil || k.Len() != 0 {
		t.Fatalf("missing dir: %v, %v", k, err)
	}
	os.WriteFile(filepath.Join(kdir, "junk.pem"), []byte("not a key"), 0o644)
	if _, err := LoadKeyring(kdir); err == nil {
		t.Fatal("junk.pem: no error")
	}
}
