// Package appraise checks a file's security.ima extended attribute the way
// the kernel's IMA appraisal does, for imafs's own measurement engine on
// stock kernels (package fanotify).
//
// Supported security.ima forms (the first byte is the type):
//
//	0x01 IMA_XATTR_DIGEST     legacy SHA-1 digest (20 bytes follow)
//	0x04 IMA_XATTR_DIGEST_NG  hash algorithm byte (kernel HASH_ALGO_*) + digest
//	0x03 EVM_IMA_XATTR_DIGSIG signature v2 as evmctl ima_sign writes it:
//	     {type 3, version 2, hash_algo, keyid (4 bytes, big endian),
//	      sig_size (2 bytes, big endian)} followed by sig_size bytes
//
// A v2 signature is verified over the file digest (in the signature's hash
// algorithm) with the public keys of the container's Keyring: RSA PKCS#1 v1.5
// or ECDSA (ASN.1), chosen by the 4-byte key id. A key's id is computed as
// evmctl and the kernel do: the last four bytes of the certificate's Subject
// Key Identifier when it has one, and the last four bytes of the SHA-1 of
// the subjectPublicKey bit string (evmctl's calc_keyid_v2); both are
// accepted.
//
// Errors carry the kernel's integrity-audit causes ("missing-hash",
// "invalid-hash", "IMA-signature-required", "invalid-signature", ...) so
// logs read like the kernel's.
package appraise
