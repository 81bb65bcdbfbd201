package vtpm

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/tpm"
	tpmquote "github.com/google/go-tpm-tools/quote"
	"github.com/google/go-tpm/legacy/tpm2"
)

// HostAttester binds namespace attestation keys to the host TPM, so that a
// verifier pins one key (the host's) instead of one per namespace, and a
// namespace's quote cannot be passed off as another namespace's.
//
// The binding is a TPM2_Quote by the host's attestation key over the host's
// sha256 PCRs 0-9 (the boot state boot_aggregate covers) whose extraData is
// BindingNonce(id, namespace AK public area): the host TPM vouches that the
// daemon running on this boot gave namespace id that key. The host AK is
// go-tpm-tools' ECC AK template in the owner hierarchy, created as a
// transient primary key (derived from the owner seed, so the same key every
// time, and nothing written to the host TPM's NV). Trusting the host AK
// itself (an EK certificate chain, TPM2_ActivateCredential) is the
// deployment's business, as for any TPM attestation.
type HostAttester struct {
	tpm *TPM
	ak  *client.Key
	pub []byte
}

// bindingPCRs are the host PCRs a binding quotes.
var bindingPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// NewHostAttester creates the host attestation key on t.
func NewHostAttester(t *TPM) (*HostAttester, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rw, err := t.conn()
	if err != nil {
		return nil, err
	}
	ak, err := client.NewKey(rw, tpm2.HandleOwner, client.AKTemplateECC())
	if err != nil {
		return nil, fmt.Errorf("host attestation key on tpm %s: %w", t.path, err)
	}
	pub, err := ak.PublicArea().Encode()
	if err != nil {
		ak.Close()
		return nil, fmt.Errorf("host attestation key on tpm %s: %w", t.path, err)
	}
	return &HostAttester{tpm: t, ak: ak, pub: pub}, nil
}

// AKPublic is the host attestation key's TPMT_PUBLIC.
func (h *HostAttester) AKPublic() []byte { return append([]byte(nil), h.pub...) }

// AKPEM is the host attestation key as PKIX PEM, for verifiers to pin.
func (h *HostAttester) AKPEM() (string, error) {
	der, err := x509.MarshalPKIXPublicKey(h.ak.PublicKey())
	if err != nil {
		return "", fmt.Errorf("host attestation key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// Close flushes the host attestation key from the host TPM (it does not
// close the TPM).
func (h *HostAttester) Close() {
	h.tpm.mu.Lock()
	defer h.tpm.mu.Unlock()
	if h.tpm.rwc != nil {
		h.ak.Close()
	}
}

// BindingNonce is the extraData of a binding quote: it names the namespace
// and its attestation key.
func BindingNonce(id string, akPublic []byte) []byte {
	h := sha256.New()
	h.Write([]byte("imafs vtpm ak binding v1\x00"))
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write(akPublic)
	return h.Sum(nil)
}

// AKBinding is the host TPM's statement that namespace ID's attestation
// key is AKPublic (of the bundle it travels in).
type AKBinding struct {
	HostAKPublic []byte   `json:"host_ak_public"` // TPMT_PUBLIC
	Quote        []byte   `json:"quote"`          // TPMS_ATTEST, extraData = BindingNonce
	Signature    []byte   `json:"signature"`      // TPMT_SIGNATURE by the host AK
	PCRs         BankPCRs `json:"pcrs"`           // host sha256 PCRs 0-9 at binding time
}

// Bind makes the binding of namespace id's attestation key.
func (h *HostAttester) Bind(id string, akPublic []byte) (*AKBinding, error) {
	h.tpm.mu.Lock()
	defer h.tpm.mu.Unlock()
	if h.tpm.rwc == nil {
		return nil, fmt.Errorf("bind attestation key of %q: host tpm closed", id)
	}
	q, err := h.ak.Quote(tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: bindingPCRs}, BindingNonce(id, akPublic))
	if err != nil {
		return nil, fmt.Errorf("bind attestation key of %q: host quote: %w", id, err)
	}
	b := &AKBinding{HostAKPublic: h.AKPublic(), Quote: q.GetQuote(), Signature: q.GetRawSig(), PCRs: BankPCRs{}}
	for i, v := range q.GetPcrs().GetPcrs() {
		b.PCRs[int(i)] = v
	}
	return b, nil
}

// verifyBinding checks that the trusted host key bound akPublic to id.
func verifyBinding(b *AKBinding, hostAK crypto.PublicKey, id string, akPublic []byte) error {
	if b == nil {
		return verr(ErrUntrustedAK, "", "the bundle has no ak_binding, and a host attestation key is required")
	}
	pubArea, err := tpm2.DecodePublic(b.HostAKPublic)
	if err != nil {
		return verr(ErrMalformed, "", "ak_binding.host_ak_public: %v", err)
	}
	pub, err := pubArea.Key()
	if err != nil {
		return verr(ErrMalformed, "", "ak_binding.host_ak_public: %v", err)
	}
	if !samePublicKey(hostAK, pub) {
		return verr(ErrUntrustedAK, "", "ak_binding is signed by a host key other than the trusted one")
	}
	q := &pb.Quote{Quote: b.Quote, RawSig: b.Signature, Pcrs: &pb.PCRs{Hash: pb.HashAlgo(tpm2.AlgSHA256), Pcrs: map[uint32][]byte{}}}
	for i, v := range b.PCRs {
		if i < 0 || i > maxPCR {
			return verr(ErrMalformed, "", "ak_binding: PCR %d", i)
		}
		q.Pcrs.Pcrs[uint32(i)] = v
	}
	if err := tpmquote.Verify(q, pub, BindingNonce(id, akPublic)); err != nil {
		return verr(ErrUntrustedAK, "", "the host did not bind this attestation key to %q: %v", id, err)
	}
	return nil
}
