package vtpm

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"sort"
	"strconv"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/imafs/imafs/measurelog"
)

// BundleVersion is the version of the bundle format this package writes
// and reads.
const BundleVersion = 1

// Hex is a byte string that JSON encodes as lowercase hex.
type Hex []byte

// MarshalText implements encoding.TextMarshaler.
func (h Hex) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *Hex) UnmarshalText(b []byte) error {
	d, err := hex.DecodeString(string(b))
	if err != nil {
		return fmt.Errorf("hex: %w", err)
	}
	*h = d
	return nil
}

// BankPCRs are PCR values of one bank by index (JSON keys are decimal).
type BankPCRs map[int]Hex

// Bundle is an attestation bundle of one namespace: everything a verifier
// needs to check the namespace's measurement list offline. JSON form:
//
//	{
//	  "version": 1,
//	  "id": "CONTAINER-ID",                    // namespace the daemon says it quoted
//	  "nonce": "HEX",                          // the verifier's challenge
//	  "ak_public": "BASE64",                   // attestation key, TPMT_PUBLIC (TPM wire format)
//	  "ak_pem": "-----BEGIN PUBLIC KEY-----…", // the same key, PKIX PEM (for pinning)
//	  "quotes": [                              // one TPM2_Quote per bank, same AK and nonce
//	    {"bank": "sha1",   "quote": "BASE64 TPMS_ATTEST", "signature": "BASE64 TPMT_SIGNATURE"},
//	    {"bank": "sha256", "quote": "…", "signature": "…"}
//	  ],
//	  "pcrs": {"sha1": {"10": "HEX"}, "sha256": {"10": "HEX"}}, // the quoted PCR values
//	  "entries": 42,                           // number of records in list
//	  "list_bank": "sha1",
//	  "list": "BASE64",                        // binary_runtime_measurements, sha1-bank format
//	  "ak_binding": {                          // only with a host TPM (HostAttester)
//	    "host_ak_public": "BASE64",            // host attestation key, TPMT_PUBLIC
//	    "quote": "BASE64", "signature": "BASE64", // host quote, extraData = BindingNonce(id, ak_public)
//	    "pcrs": {"0": "HEX", … "9": "HEX"}     // host sha256 PCRs 0-9 it quoted
//	  }
//	}
//
// Each quote selects, in its bank, PCR 10 and every other PCR the list
// extends; its extraData is the nonce; its PCR digest is the hash (the
// signature's hash, sha256) of the selected PCR values in index order.
// Nothing but the TPMS_ATTEST structures is signed: "id", "entries" and the
// rest are claims that Verify checks against them.
type Bundle struct {
	Version  int                 `json:"version"`
	ID       string              `json:"id"`
	Nonce    Hex                 `json:"nonce"`
	AKPublic []byte              `json:"ak_public"`
	AKPEM    string              `json:"ak_pem,omitempty"`
	Quotes   []BankQuote         `json:"quotes"`
	PCRs     map[string]BankPCRs `json:"pcrs"`
	Entries  int                 `json:"entries"`
	ListBank string              `json:"list_bank"`
	List     []byte              `json:"list"`
	// AKBinding, when the daemon has a host TPM, is the host's statement
	// that AKPublic is namespace ID's key (see HostAttester).
	AKBinding *AKBinding `json:"ak_binding,omitempty"`
}

// BankQuote is one TPM2_Quote over PCRs of one bank.
type BankQuote struct {
	Bank      string `json:"bank"`
	Quote     []byte `json:"quote"`     // TPMS_ATTEST as the TPM signed it
	Signature []byte `json:"signature"` // TPMT_SIGNATURE
}

// ParseBundle decodes a bundle's JSON.
func ParseBundle(data []byte) (*Bundle, error) {
	var b Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("parse bundle: %w", err)
	}
	return &b, nil
}

// Marshal encodes the bundle as indented JSON.
func (b *Bundle) Marshal() ([]byte, error) {
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode bundle %q: %w", b.ID, err)
	}
	return append(out, '\n'), nil
}

// Quote makes an attestation bundle for the namespace: a quote of every
// bank's PCR 10 (and any other PCR the list extends) signed by the
// namespace's attestation key with nonce as extraData, the quoted values,
// and the binary list of exactly the entries the PCRs hold (the first
// Extended() entries of SWTPMOptions.List). Extends wait while it runs;
// a quote takes ~5 ms (two TPM2_Quote with an ECC P-256 key).
func (s *SWTPM) Quote(nonce []byte) (*Bundle, error) {
	if len(nonce) == 0 || len(nonce) > 64 {
		return nil, fmt.Errorf("quote vtpm %q: nonce must be 1..64 bytes, got %d", s.opts.ID, len(nonce))
	}
	if s.opts.List == nil {
		return nil, fmt.Errorf("quote vtpm %q: no measurement list configured", s.opts.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		return nil, fmt.Errorf("quote vtpm %q: %w", s.opts.ID, ErrNotSynced)
	}
	n := s.extended
	if have := s.opts.List.Len(); have < n {
		return nil, fmt.Errorf("quote vtpm %q: list has %d entries but the TPM extended %d", s.opts.ID, have, n)
	}
	var list []byte
	for i := 0; i < n; i++ {
		e := s.opts.List.Entry(i)
		if e == nil {
			return nil, fmt.Errorf("quote vtpm %q: list entry %d missing", s.opts.ID, i)
		}
		list = e.AppendBinary(list, measurelog.SHA1)
	}

	ak, err := s.attestationKey()
	if err != nil {
		return nil, fmt.Errorf("quote vtpm %q: %w", s.opts.ID, err)
	}
	pubArea, err := ak.PublicArea().Encode()
	if err != nil {
		return nil, fmt.Errorf("quote vtpm %q: encode attestation key: %w", s.opts.ID, err)
	}
	der, err := x509.MarshalPKIXPublicKey(ak.PublicKey())
	if err != nil {
		return nil, fmt.Errorf("quote vtpm %q: encode attestation key: %w", s.opts.ID, err)
	}
	b := &Bundle{
		Version:  BundleVersion,
		ID:       s.opts.ID,
		Nonce:    append(Hex(nil), nonce...),
		AKPublic: pubArea,
		AKPEM:    string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		PCRs:     map[string]BankPCRs{},
		Entries:  n,
		ListBank: measurelog.SHA1.String(),
		List:     list,
	}
	if s.binding != nil {
		b.AKBinding = s.binding
	}
	indexes := sortedKeys(s.touched)
	s.tpm.mu.Lock()
	defer s.tpm.mu.Unlock()
	for _, bank := range Banks {
		alg, err := tpmAlg(bank)
		if err != nil {
			return nil, err
		}
		q, err := ak.Quote(tpm2.PCRSelection{Hash: alg, PCRs: indexes}, nonce)
		if err != nil {
			return nil, fmt.Errorf("quote vtpm %q: %s bank: %w", s.opts.ID, bank, err)
		}
		b.Quotes = append(b.Quotes, BankQuote{Bank: bank.String(), Quote: q.GetQuote(), Signature: q.GetRawSig()})
		vals := BankPCRs{}
		for i, v := range q.GetPcrs().GetPcrs() {
			vals[int(i)] = v
		}
		b.PCRs[bank.String()] = vals
	}
	return b, nil
}

// sortedIndexes returns a bank's PCR indexes in ascending order.
func (p BankPCRs) sortedIndexes() []int {
	out := make([]int, 0, len(p))
	for i := range p {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

// String renders "10=hex,11=hex".
func (p BankPCRs) String() string {
	var s string
	for k, i := range p.sortedIndexes() {
		if k > 0 {
			s += ","
		}
		s += strconv.Itoa(i) + "=" + hex.EncodeToString(p[i])
	}
	return s
}
