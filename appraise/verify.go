package appraise

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/imafs/imafs/measurelog"
)

// Cause is why an appraisal failed, named as the kernel's integrity audit
// records name it.
type Cause string

// Appraisal failure causes.
const (
	CauseMissingHash   Cause = "missing-hash"           // no security.ima
	CauseInvalidHash   Cause = "invalid-hash"           // digest differs
	CauseSigRequired   Cause = "IMA-signature-required" // appraise_type=imasig but a hash
	CauseInvalidSig    Cause = "invalid-signature"      // bad signature
	CauseUnknownKey    Cause = "missing-key"            // no key with the signature's id
	CauseUnsupported   Cause = "unsupported-algorithm"  // hash algo we cannot compute
	CauseInvalidXattr  Cause = "invalid-xattr"          // malformed security.ima
	CauseUnknownError  Cause = "unknown-error"          // anything else (I/O, ...)
	CauseVerityUnknown Cause = "verity-unsupported"     // sigv3 / fs-verity
)

// Error is an appraisal failure.
type Error struct {
	Cause Cause
	Err   error // detail, may be nil
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("appraise: %s: %v", e.Cause, e.Err)
	}
	return "appraise: " + string(e.Cause)
}

func (e *Error) Unwrap() error { return e.Err }

// CauseOf returns the cause of an appraisal error, or CauseUnknownError.
func CauseOf(err error) Cause {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Cause
	}
	return CauseUnknownError
}

func fail(c Cause, format string, args ...any) error {
	var err error
	if format != "" {
		err = fmt.Errorf(format, args...)
	}
	return &Error{Cause: c, Err: err}
}

// Requirement is what the matching appraise rule demands.
type Requirement struct {
	// Signature: appraise_type=imasig; a plain hash is not enough.
	Signature bool
	// Algos: appraise_algos=; empty means any.
	Algos []string
}

// HashAlgo returns the algorithm the file must be hashed with to appraise v
// (the kernel hashes the file in the algorithm its xattr names).
func (v *Value) HashAlgo() (measurelog.Algo, error) {
	if v == nil {
		return 0, fail(CauseMissingHash, "")
	}
	switch v.Type {
	case TypeDigest, TypeDigestNG, TypeDigSig:
	case TypeVeritySig:
		return 0, fail(CauseVerityUnknown, "fs-verity signatures are not supported by the fanotify engine")
	default:
		return 0, fail(CauseInvalidXattr, "security.ima type 0x%02x is not an IMA value", uint8(v.Type))
	}
	if v.Algo == 0 {
		return 0, fail(CauseUnsupported, "hash algorithm %s", kernelHashName(v.HashID))
	}
	return v.Algo, nil
}

// Verify appraises a file whose digest in v.HashAlgo() is digest against
// its security.ima value v (nil: no xattr) with keys, under req.
func Verify(v *Value, digest []byte, keys *Keyring, req Requirement) error {
	algo, err := v.HashAlgo()
	if err != nil {
		return err
	}
	if len(req.Algos) > 0 {
		ok := false
		for _, a := range req.Algos {
			if a == algo.String() {
				ok = true
			}
		}
		if !ok {
			return fail(CauseUnsupported, "%s not in appraise_algos %v", algo, req.Algos)
		}
	}
	if len(digest) != algo.Size() {
		return fail(CauseUnknownError, "file digest of %d bytes for %s", len(digest), algo)
	}
	switch v.Type {
	case TypeDigest, TypeDigestNG:
		if req.Signature {
			return fail(CauseSigRequired, "security.ima holds a %s", v)
		}
		if !bytes.Equal(v.Digest, digest) {
			return fail(CauseInvalidHash, "file %s:%x, security.ima %s:%x", algo, digest, algo, v.Digest)
		}
		return nil
	case TypeDigSig:
		if v.SigVersion != sigVersion2 {
			return fail(CauseVerityUnknown, "signature v%d", v.SigVersion)
		}
		return verifySig(v, algo, digest, keys)
	}
	return fail(CauseInvalidXattr, "security.ima %s", v)
}

func verifySig(v *Value, algo measurelog.Algo, digest []byte, keys *Keyring) error {
	cands := keys.Lookup(v.KeyID)
	if len(cands) == 0 {
		return fail(CauseUnknownKey, "no key with id %08x among %d keys", v.KeyID, keys.Len())
	}
	h, err := cryptoHash(algo)
	if err != nil {
		return err
	}
	var last error
	for _, key := range cands {
		switch pub := key.Public.(type) {
		case *rsa.PublicKey:
			if last = rsa.VerifyPKCS1v15(pub, h, digest, v.Sig); last == nil {
				return nil
			}
		case *ecdsa.PublicKey:
			if ecdsa.VerifyASN1(pub, digest, v.Sig) {
				return nil
			}
			last = errors.New("ecdsa verification failed")
		}
	}
	return fail(CauseInvalidSig, "keyid %08x: %v", v.KeyID, last)
}

func cryptoHash(a measurelog.Algo) (crypto.Hash, error) {
	switch a {
	case measurelog.SHA1:
		return crypto.SHA1, nil
	case measurelog.SHA256:
		return crypto.SHA256, nil
	case measurelog.SHA384:
		return crypto.SHA384, nil
	case measurelog.SHA512:
		return crypto.SHA512, nil
	}
	return 0, fail(CauseUnsupported, "hash algorithm %s", a)
}
