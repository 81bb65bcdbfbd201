package appraise

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/imafs/imafs/measurelog"
)

// XattrName is the extended attribute IMA keeps a file's reference value in.
const XattrName = "security.ima"

// Type is the first byte of a security.ima value.
type Type uint8

// security.ima value types (kernel enum evm_ima_xattr_type).
const (
	TypeDigest         Type = 0x01 // IMA_XATTR_DIGEST: sha1 digest
	TypeEVMHMAC        Type = 0x02 // EVM_XATTR_HMAC (never in security.ima)
	TypeDigSig         Type = 0x03 // EVM_IMA_XATTR_DIGSIG: signature
	TypeDigestNG       Type = 0x04 // IMA_XATTR_DIGEST_NG: algo + digest
	TypeEVMPortableSig Type = 0x05 // EVM_XATTR_PORTABLE_DIGSIG
	TypeVeritySig      Type = 0x06 // IMA_VERITY_DIGSIG (sigv3)
)

// Signature versions in a TypeDigSig value.
const (
	sigVersion2 = 2
	sigVersion3 = 3
)

// sigV2HeaderLen is the size of struct signature_v2_hdr.
const sigV2HeaderLen = 1 + 1 + 1 + 4 + 2

// Kernel hash algorithm ids (include/uapi/linux/hash_info.h), the ones Go
// and measurelog can compute.
var kernelHashAlgos = map[uint8]measurelog.Algo{
	2: measurelog.SHA1,
	4: measurelog.SHA256,
	5: measurelog.SHA384,
	6: measurelog.SHA512,
}

// kernelHashNames names every kernel hash id, for error messages.
var kernelHashNames = []string{"md4", "md5", "sha1", "rmd160", "sha256", "sha384", "sha512",
	"sha224", "rmd128", "rmd256", "rmd320", "wp256", "wp384", "wp512", "tgr128", "tgr160",
	"tgr192", "sm3", "streebog256", "streebog512", "sha3-256", "sha3-384", "sha3-512"}

// KernelHashID returns the kernel's HASH_ALGO_* number of a.
func KernelHashID(a measurelog.Algo) (uint8, bool) {
	for id, b := range kernelHashAlgos {
		if a == b {
			return id, true
		}
	}
	return 0, false
}

func kernelHashName(id uint8) string {
	if int(id) < len(kernelHashNames) {
		return kernelHashNames[id]
	}
	return fmt.Sprintf("hash_algo(%d)", id)
}

// Value is a parsed security.ima value.
type Value struct {
	Type Type
	// HashID is the kernel hash algorithm id (HASH_ALGO_*) of Digest or of
	// the signed digest.
	HashID uint8
	// Algo is HashID as a measurelog algorithm, 0 if we cannot compute it.
	Algo measurelog.Algo
	// Digest is the reference digest of a hash value (TypeDigest, TypeDigestNG).
	Digest []byte
	// SigVersion, KeyID and Sig describe a signature (TypeDigSig).
	SigVersion uint8
	KeyID      uint32
	Sig        []byte
	// Raw is the whole attribute value.
	Raw []byte
}

// ErrMalformed wraps every parse failure.
var ErrMalformed = errors.New("malformed security.ima")

// Parse decodes a security.ima value. Unknown algorithms parse (Algo is 0)
// so that the caller can report "unsupported algorithm" instead of garbage.
func Parse(raw []byte) (*Value, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("parse security.ima: empty value: %w", ErrMalformed)
	}
	v := &Value{Type: Type(raw[0]), Raw: append([]byte(nil), raw...)}
	switch v.Type {
	case TypeDigest:
		if len(raw) != 1+20 {
			return nil, fmt.Errorf("parse security.ima: sha1 digest of %d bytes: %w", len(raw)-1, ErrMalformed)
		}
		v.HashID, v.Algo, v.Digest = 2, measurelog.SHA1, v.Raw[1:]
	case TypeDigestNG:
		if len(raw) < 2 {
			return nil, fmt.Errorf("parse security.ima: digest_ng without algorithm: %w", ErrMalformed)
		}
		v.HashID, v.Digest = raw[1], v.Raw[2:]
		v.Algo = kernelHashAlgos[v.HashID]
		if v.Algo != 0 && len(v.Digest) != v.Algo.Size() {
			return nil, fmt.Errorf("parse security.ima: %s digest of %d bytes: %w", v.Algo, len(v.Digest), ErrMalformed)
		}
		if len(v.Digest) == 0 {
			return nil, fmt.Errorf("parse security.ima: empty digest: %w", ErrMalformed)
		}
	case TypeDigSig:
		if len(raw) < 2 {
			return nil, fmt.Errorf("parse security.ima: signature without version: %w", ErrMalformed)
		}
		v.SigVersion = raw[1]
		if v.SigVersion != sigVersion2 && v.SigVersion != sigVersion3 {
			return nil, fmt.Errorf("parse security.ima: signature version %d: %w", v.SigVersion, ErrMalformed)
		}
		if len(raw) < sigV2HeaderLen {
			return nil, fmt.Errorf("parse security.ima: signature header of %d bytes: %w", len(raw), ErrMalformed)
		}
		v.HashID = raw[2]
		v.Algo = kernelHashAlgos[v.HashID]
		v.KeyID = binary.BigEndian.Uint32(raw[3:7])
		size := int(binary.BigEndian.Uint16(raw[7:9]))
		if size == 0 || len(raw)-sigV2HeaderLen != size {
			return nil, fmt.Errorf("parse security.ima: sig_size %d but %d bytes follow: %w", size, len(raw)-sigV2HeaderLen, ErrMalformed)
		}
		v.Sig = v.Raw[sigV2HeaderLen:]
	case TypeVeritySig, TypeEVMHMAC, TypeEVMPortableSig:
		// Recognised but not appraisable here (fs-verity, EVM).
	default:
		return nil, fmt.Errorf("parse security.ima: type 0x%02x: %w", raw[0], ErrMalformed)
	}
	return v, nil
}

// IsSignature reports whether v is a signature (which the ima-sig template
// records in its "sig" field).
func (v *Value) IsSignature() bool { return v.Type == TypeDigSig || v.Type == TypeVeritySig }

// String describes v for logs.
func (v *Value) String() string {
	switch v.Type {
	case TypeDigest, TypeDigestNG:
		return fmt.Sprintf("digest %s:%x", kernelHashName(v.HashID), v.Digest)
	case TypeDigSig:
		return fmt.Sprintf("signature v%d %s keyid %08x", v.SigVersion, kernelHashName(v.HashID), v.KeyID)
	}
	return fmt.Sprintf("type 0x%02x", uint8(v.Type))
}
