package vtpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	pb "github.com/google/go-tpm-tools/proto/tpm"
	tpmquote "github.com/google/go-tpm-tools/quote"
	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/imafs/imafs/measurelog"
)

// What a verification can fail on; test with errors.Is. Every failure is a
// *VerifyError wrapping one of these.
var (
	ErrMalformed    = errors.New("malformed bundle")
	ErrNonce        = errors.New("wrong nonce")
	ErrUntrustedAK  = errors.New("untrusted attestation key")
	ErrWrongID      = errors.New("bundle is for another namespace")
	ErrSignature    = errors.New("bad quote signature")
	ErrPCRMismatch  = errors.New("PCR values do not match the quote")
	ErrListMismatch = errors.New("measurement list does not replay to the quoted PCRs")
)

// VerifyError says what failed, in which bank (if any), and the details.
type VerifyError struct {
	Kind   error  // one of the Err* values above
	Bank   string // "sha1", "sha256" or "" when not bank-specific
	Detail string
}

func (e *VerifyError) Error() string {
	s := "verify bundle: " + e.Kind.Error()
	if e.Bank != "" {
		s += " (" + e.Bank + " bank)"
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap returns Kind.
func (e *VerifyError) Unwrap() error { return e.Kind }

func verr(kind error, bank, format string, args ...any) error {
	return &VerifyError{Kind: kind, Bank: bank, Detail: fmt.Sprintf(format, args...)}
}

// VerifyOption adds a requirement to Verify.
type VerifyOption func(*verifyConfig)

type verifyConfig struct {
	trustedAK crypto.PublicKey
	hostAK    crypto.PublicKey
	id        string
}

// WithTrustedHostAK requires the bundle's attestation key to be bound to
// the bundle's namespace ID by this host attestation key (ak_binding, see
// HostAttester). One pinned host key then tells every namespace's quotes
// apart: a bundle relabeled with another ID, or carrying another
// namespace's key, fails with ErrUntrustedAK.
func WithTrustedHostAK(pub crypto.PublicKey) VerifyOption {
	return func(c *verifyConfig) { c.hostAK = pub }
}

// WithTrustedAK pins the attestation key: the bundle's key must be this
// one. Without it Verify proves only that the bundle is self-consistent
// (some TPM-shaped key signed these PCRs and this list with the nonce), not
// whose TPM it came from: pin the namespace's key to tell its quotes from
// another namespace's.
func WithTrustedAK(pub crypto.PublicKey) VerifyOption {
	return func(c *verifyConfig) { c.trustedAK = pub }
}

// WithID requires the bundle to claim namespace id.
func WithID(id string) VerifyOption {
	return func(c *verifyConfig) { c.id = id }
}

// ParseAKPEM reads a PKIX PEM public key, as in a bundle's ak_pem.
func ParseAKPEM(data []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, errors.New("parse attestation key: no PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse attestation key: %w", err)
	}
	return pub, nil
}

// Verify checks a bundle against the nonce the verifier chose, in this
// order, and reports the first failure as a *VerifyError:
//
//  1. format: version, banks, fields decode (ErrMalformed);
//  2. the bundle's nonce is the verifier's (ErrNonce);
//  3. the attestation key is a restricted signing key, the pinned one if
//     WithTrustedAK was given, and bound to the bundle's id by the pinned
//     host key if WithTrustedHostAK was given (ErrUntrustedAK); the claimed
//     id (ErrWrongID);
//  4. per bank (sha1, sha256): the signature over the TPMS_ATTEST by the
//     attestation key (ErrSignature); the quote's extraData is the nonce
//     (ErrNonce); the quoted PCR selection and digest match the bundle's
//     PCR values (ErrPCRMismatch); then go-tpm-tools' quote.Verify must
//     accept the quote too (ErrSignature otherwise);
//  5. the list decodes and its replay gives exactly the quoted values of
//     every quoted PCR in both banks, and it extends no PCR the quote does
//     not cover (ErrListMismatch).
//
// As with the kernel's list, replay vouches for each entry's PCR, whether
// it is a violation, and the template data of every entry but a violation:
// a violation's digest is zero and it extends its PCR with 0xff.. whatever
// its name field says, and a template's name is not hashed.
func Verify(b *Bundle, nonce []byte, opts ...VerifyOption) error {
	var cfg verifyConfig
	for _, o := range opts {
		o(&cfg)
	}
	if b == nil {
		return verr(ErrMalformed, "", "no bundle")
	}
	if b.Version != BundleVersion {
		return verr(ErrMalformed, "", "version %d, this verifier reads version %d", b.Version, BundleVersion)
	}
	if len(nonce) == 0 {
		return verr(ErrNonce, "", "no nonce given to check against")
	}
	if !bytes.Equal(b.Nonce, nonce) {
		return verr(ErrNonce, "", "bundle answers nonce %x, expected %x", []byte(b.Nonce), nonce)
	}

	// Attestation key.
	pubArea, err := tpm2.DecodePublic(b.AKPublic)
	if err != nil {
		return verr(ErrMalformed, "", "ak_public: %v", err)
	}
	akPub, err := pubArea.Key()
	if err != nil {
		return verr(ErrMalformed, "", "ak_public: %v", err)
	}
	const akFlags = tpm2.FlagSign | tpm2.FlagRestricted | tpm2.FlagFixedTPM
	if pubArea.Attributes&akFlags != akFlags {
		return verr(ErrUntrustedAK, "", "ak_public is not a restricted, fixedTPM signing key (attributes %#x)", uint32(pubArea.Attributes))
	}
	if b.AKPEM != "" {
		pemPub, err := ParseAKPEM([]byte(b.AKPEM))
		if err != nil {
			return verr(ErrMalformed, "", "ak_pem: %v", err)
		}
		if !samePublicKey(pemPub, akPub) {
			return verr(ErrMalformed, "", "ak_pem and ak_public are different keys")
		}
	}
	if cfg.trustedAK != nil && !samePublicKey(cfg.trustedAK, akPub) {
		return verr(ErrUntrustedAK, "", "bundle for %q is signed by a key other than the trusted attestation key", b.ID)
	}
	if cfg.hostAK != nil {
		if err := verifyBinding(b.AKBinding, cfg.hostAK, b.ID, b.AKPublic); err != nil {
			return err
		}
	}
	if cfg.id != "" && b.ID != cfg.id {
		return verr(ErrWrongID, "", "bundle claims %q, expected %q", b.ID, cfg.id)
	}

	// Quotes.
	if b.ListBank != measurelog.SHA1.String() {
		return verr(ErrMalformed, "", "list_bank %q, want sha1", b.ListBank)
	}
	quotes := map[string]BankQuote{}
	for _, q := range b.Quotes {
		if _, dup := quotes[q.Bank]; dup {
			return verr(ErrMalformed, q.Bank, "two quotes for one bank")
		}
		quotes[q.Bank] = q
	}
	for _, bank := range Banks {
		q, ok := quotes[bank.String()]
		if !ok {
			return verr(ErrMalformed, bank.String(), "no quote")
		}
		if err := verifyBankQuote(bank, q, b.PCRs[bank.String()], akPub, nonce); err != nil {
			return err
		}
	}

	// The list against the quoted PCRs.
	entries, err := measurelog.DecodeBinary(b.List, measurelog.SHA1)
	if err != nil {
		return verr(ErrListMismatch, "", "decode list: %v", err)
	}
	if len(entries) != b.Entries {
		return verr(ErrListMismatch, "", "list has %d entries, bundle says %d", len(entries), b.Entries)
	}
	replay := measurelog.Replay(entries, Banks...)
	for _, bank := range Banks {
		quoted := b.PCRs[bank.String()]
		for _, i := range quoted.sortedIndexes() {
			if got := pcrValue(replay, bank, i); !bytes.Equal(got, quoted[i]) {
				return verr(ErrListMismatch, bank.String(), "PCR %d: replaying the %d entries gives %x, the quote says %x",
					i, len(entries), got, []byte(quoted[i]))
			}
		}
		for _, i := range replay.Touched() {
			if _, ok := quoted[i]; !ok {
				return verr(ErrListMismatch, bank.String(), "the list extends PCR %d, which the quote does not cover", i)
			}
		}
	}
	return nil
}

// verifyBankQuote checks one bank's quote: signature, nonce, PCRs.
func verifyBankQuote(bank measurelog.Algo, q BankQuote, pcrs BankPCRs, akPub crypto.PublicKey, nonce []byte) error {
	name := bank.String()
	if len(pcrs) == 0 {
		return verr(ErrMalformed, name, "no PCR values")
	}
	for i, v := range pcrs {
		if i < 0 || i > maxPCR || len(v) != bank.Size() {
			return verr(ErrMalformed, name, "PCR %d: bad index or %d-byte value", i, len(v))
		}
	}
	sig, err := tpm2.DecodeSignature(bytes.NewBuffer(q.Signature))
	if err != nil {
		return verr(ErrSignature, name, "decode signature: %v", err)
	}
	if err := checkSignature(akPub, sig, q.Quote); err != nil {
		return verr(ErrSignature, name, "%v", err)
	}
	att, err := tpm2.DecodeAttestationData(q.Quote)
	if err != nil {
		return verr(ErrMalformed, name, "decode quote: %v", err)
	}
	if att.Type != tpm2.TagAttestQuote || att.AttestedQuoteInfo == nil {
		return verr(ErrMalformed, name, "attestation data is not a quote (type %#x)", uint16(att.Type))
	}
	if !bytes.Equal(att.ExtraData, nonce) {
		return verr(ErrNonce, name, "the TPM quoted nonce %x, expected %x", []byte(att.ExtraData), nonce)
	}
	info := att.AttestedQuoteInfo
	alg, err := tpmAlg(bank)
	if err != nil {
		return verr(ErrMalformed, name, "%v", err)
	}
	idx := pcrs.sortedIndexes()
	if info.PCRSelection.Hash != alg || !sameInts(sortedCopy(info.PCRSelection.PCRs), idx) {
		return verr(ErrPCRMismatch, name, "the quote selects %v PCRs %v, the bundle lists %s PCRs %v",
			info.PCRSelection.Hash, info.PCRSelection.PCRs, name, idx)
	}
	h, err := sigHash(sig)
	if err != nil {
		return verr(ErrSignature, name, "%v", err)
	}
	d := h.New()
	for _, i := range idx {
		d.Write(pcrs[i])
	}
	if got := d.Sum(nil); !bytes.Equal(got, info.PCRDigest) {
		return verr(ErrPCRMismatch, name, "bundle PCRs %s hash to %x, the quote's PCR digest is %x",
			pcrs, got, []byte(info.PCRDigest))
	}
	// The authoritative check: go-tpm-tools' own quote verification.
	pbq := &pb.Quote{
		Quote:  q.Quote,
		RawSig: q.Signature,
		Pcrs:   &pb.PCRs{Hash: pb.HashAlgo(alg), Pcrs: map[uint32][]byte{}},
	}
	for i, v := range pcrs {
		pbq.Pcrs.Pcrs[uint32(i)] = v
	}
	if err := tpmquote.Verify(pbq, akPub, nonce); err != nil {
		return verr(ErrSignature, name, "go-tpm-tools: %v", err)
	}
	return nil
}

// checkSignature verifies a TPMT_SIGNATURE over data with the key.
func checkSignature(pub crypto.PublicKey, sig *tpm2.Signature, data []byte) error {
	h, err := sigHash(sig)
	if err != nil {
		return err
	}
	d := h.New()
	d.Write(data)
	digest := d.Sum(nil)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if sig.ECC == nil {
			return fmt.Errorf("ECC key but %v signature", sig.Alg)
		}
		if !ecdsa.Verify(k, digest, sig.ECC.R, sig.ECC.S) {
			return errors.New("ECDSA signature does not verify with the attestation key")
		}
	case *rsa.PublicKey:
		if sig.RSA == nil {
			return fmt.Errorf("RSA key but %v signature", sig.Alg)
		}
		if err := rsa.VerifyPKCS1v15(k, h, digest, sig.RSA.Signature); err != nil {
			return fmt.Errorf("RSASSA signature does not verify with the attestation key: %v", err)
		}
	default:
		return fmt.Errorf("unsupported attestation key type %T", pub)
	}
	return nil
}

func sigHash(sig *tpm2.Signature) (crypto.Hash, error) {
	var alg tpm2.Algorithm
	switch {
	case sig.ECC != nil:
		alg = sig.ECC.HashAlg
	case sig.RSA != nil:
		alg = sig.RSA.HashAlg
	default:
		return 0, errors.New("signature has no hash algorithm")
	}
	h, err := alg.Hash()
	if err != nil {
		return 0, fmt.Errorf("signature hash: %v", err)
	}
	return h, nil
}

type equalKey interface{ Equal(crypto.PublicKey) bool }

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(equalKey)
	return ok && k.Equal(b)
}

func sortedCopy(in []int) []int {
	out := append([]int(nil), in...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func sameInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
