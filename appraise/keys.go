package appraise

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Key is one public key of a Keyring with the key ids a signature may name it by.
type Key struct {
	Public crypto.PublicKey
	// IDs are the 4-byte key ids (big endian as in the signature header):
	// the last four bytes of the certificate's SKID (if any) and of the
	// SHA-1 of the subjectPublicKey bit string.
	IDs []uint32
	// Source is the file the key came from (for logs).
	Source string
}

// Keyring is a container's set of trusted public keys (the kernel's .ima
// keyring, per container). The zero Keyring holds no keys.
type Keyring struct {
	keys []*Key
}

// Len returns the number of keys.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// Keys returns the keys in load order.
func (k *Keyring) Keys() []*Key {
	if k == nil {
		return nil
	}
	return append([]*Key(nil), k.keys...)
}

// Lookup returns the keys that answer to id.
func (k *Keyring) Lookup(id uint32) []*Key {
	if k == nil {
		return nil
	}
	var out []*Key
	for _, key := range k.keys {
		for _, kid := range key.IDs {
			if kid == id {
				out = append(out, key)
				break
			}
		}
	}
	return out
}

// Add adds a public key; skid is the certificate's Subject Key Identifier (may be nil).
func (k *Keyring) Add(pub crypto.PublicKey, skid []byte, source string) error {
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return fmt.Errorf("add key from %s: unsupported key type %T", source, pub)
	}
	id, err := KeyID(pub)
	if err != nil {
		return fmt.Errorf("add key from %s: %w", source, err)
	}
	key := &Key{Public: pub, IDs: []uint32{id}, Source: source}
	if len(skid) >= 4 {
		if s := binary.BigEndian.Uint32(skid[len(skid)-4:]); s != id {
			key.IDs = append(key.IDs, s)
		}
	}
	k.keys = append(k.keys, key)
	return nil
}

// KeyID computes evmctl's v2 key id of pub: the last four bytes of the SHA-1
// of the subjectPublicKey bit string (for RSA, the PKCS#1 RSAPublicKey DER).
func KeyID(pub crypto.PublicKey) (uint32, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return 0, fmt.Errorf("key id: marshal public key: %w", err)
	}
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return 0, fmt.Errorf("key id: parse SubjectPublicKeyInfo: %w", err)
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return binary.BigEndian.Uint32(sum[16:20]), nil
}

// ParseKeys adds every certificate and public key in data (PEM blocks
// "CERTIFICATE" / "PUBLIC KEY" / "RSA PUBLIC KEY", or one DER certificate or
// SubjectPublicKeyInfo) to k. Private key blocks are skipped.
func (k *Keyring) ParseKeys(data []byte, source string) (int, error) {
	n := 0
	if !strings.Contains(string(data), "-----BEGIN") {
		if cert, err := x509.ParseCertificate(data); err == nil {
			return 1, k.Add(cert.PublicKey, cert.SubjectKeyId, source)
		}
		if pub, err := x509.ParsePKIXPublicKey(data); err == nil {
			return 1, k.Add(pub, nil, source)
		}
		return 0, fmt.Errorf("parse keys in %s: neither a DER certificate nor a DER public key", source)
	}
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return n, fmt.Errorf("parse certificate in %s: %w", source, err)
			}
			if err := k.Add(cert.PublicKey, cert.SubjectKeyId, source); err != nil {
				return n, err
			}
		case "PUBLIC KEY":
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return n, fmt.Errorf("parse public key in %s: %w", source, err)
			}
			if err := k.Add(pub, nil, source); err != nil {
				return n, err
			}
		case "RSA PUBLIC KEY":
			pub, err := x509.ParsePKCS1PublicKey(block.Bytes)
			if err != nil {
				return n, fmt.Errorf("parse RSA public key in %s: %w", source, err)
			}
			if err := k.Add(pub, nil, source); err != nil {
				return n, err
			}
		default:
			continue
		}
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("parse keys in %s: no certificate or public key found", source)
	}
	return n, nil
}

// keyFileSuffixes are the files LoadKeyring reads.
var keyFileSuffixes = []string{".pem", ".der", ".crt", ".cer", ".x509", ".pub"}

// LoadKeyring reads every key file (*.pem, *.der, *.crt, *.cer, *.x509,
// *.pub) in dir. A missing directory is an empty keyring; a file that is not
// a key is an error (a typo must not silently drop a trusted key).
func LoadKeyring(dir string) (*Keyring, error) {
	k := &Keyring{}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load keyring %s: %w", dir, err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		for _, s := range keyFileSuffixes {
			if strings.HasSuffix(e.Name(), s) {
				names = append(names, e.Name())
				break
			}
		}
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(dir, name)
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("load keyring %s: %w", dir, err)
		}
		if _, err := k.ParseKeys(data, p); err != nil {
			return nil, fmt.Errorf("load keyring %s: %w", dir, err)
		}
	}
	return k, nil
}
