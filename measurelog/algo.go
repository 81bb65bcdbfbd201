package measurelog

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
)

// Algo is a hash algorithm as IMA names it. SHA1, SHA256, SHA384 and SHA512
// can be PCR banks; MD5 and SHA224 only appear as file digest algorithms.
type Algo uint8

// Hash algorithms, named as the kernel's hash_algo_name[] names them.
const (
	SHA1 Algo = iota + 1
	SHA256
	SHA384
	SHA512
	SHA224
	MD5
)

var algoNames = map[Algo]string{
	SHA1:   "sha1",
	SHA256: "sha256",
	SHA384: "sha384",
	SHA512: "sha512",
	SHA224: "sha224",
	MD5:    "md5",
}

// Banks lists the algorithms that can be PCR banks of a list, in order.
var Banks = []Algo{SHA1, SHA256, SHA384, SHA512}

// ParseAlgo returns the algorithm IMA calls name ("sha1", "sha256", ...).
func ParseAlgo(name string) (Algo, error) {
	for a, n := range algoNames {
		if n == name {
			return a, nil
		}
	}
	return 0, fmt.Errorf("parse hash algorithm %q: unknown (want sha1, sha256, sha384, sha512, sha224 or md5)", name)
}

// String returns IMA's name of a ("sha256").
func (a Algo) String() string {
	if n, ok := algoNames[a]; ok {
		return n
	}
	return fmt.Sprintf("algo(%d)", uint8(a))
}

// Valid reports whether a is a known algorithm.
func (a Algo) Valid() bool { _, ok := algoNames[a]; return ok }

// IsBank reports whether a can be a PCR bank of a List.
func (a Algo) IsBank() bool { return a >= SHA1 && a <= SHA512 }

// Size returns the digest size of a in bytes (0 for an unknown algorithm).
func (a Algo) Size() int {
	switch a { // no map lookup: this is on every rendered entry's path
	case SHA1:
		return sha1.Size
	case SHA256:
		return sha256.Size
	case SHA384:
		return sha512.Size384
	case SHA512:
		return sha512.Size
	case SHA224:
		return sha256.Size224
	case MD5:
		return md5.Size
	}
	return 0
}

// appendSum appends the digest of data in a to dst, without allocating a
// hash state (the one-shot Sum functions keep it on the stack).
func (a Algo) appendSum(dst, data []byte) []byte {
	switch a {
	case SHA1:
		s := sha1.Sum(data)
		return append(dst, s[:]...)
	case SHA256:
		s := sha256.Sum256(data)
		return append(dst, s[:]...)
	case SHA384:
		s := sha512.Sum384(data)
		return append(dst, s[:]...)
	case SHA512:
		s := sha512.Sum512(data)
		return append(dst, s[:]...)
	case SHA224:
		s := sha256.Sum224(data)
		return append(dst, s[:]...)
	case MD5:
		s := md5.Sum(data)
		return append(dst, s[:]...)
	}
	panic(fmt.Sprintf("measurelog: hash of unknown algorithm %d", uint8(a)))
}

// New returns a new hash.Hash computing a. It panics for an unknown
// algorithm, like crypto.Hash.New; check Valid first for untrusted values.
func (a Algo) New() hash.Hash {
	switch a {
	case SHA1:
		return sha1.New()
	case SHA256:
		return sha256.New()
	case SHA384:
		return sha512.New384()
	case SHA512:
		return sha512.New()
	case SHA224:
		return sha256.New224()
	case MD5:
		return md5.New()
	}
	panic(fmt.Sprintf("measurelog: hash of unknown algorithm %d", uint8(a)))
}

// Sum returns the digest of data.
func (a Algo) Sum(data []byte) []byte {
	h := a.New()
	h.Write(data)
	return h.Sum(nil)
}
