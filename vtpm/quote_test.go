package vtpm

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/imafs/imafs/measurelog"
)

// namespace is one test namespace: its list and its vTPM.
type namespace struct {
	list    *measurelog.List
	tpm     *SWTPM
	entries []*measurelog.Entry
}

func newNamespace(t *testing.T, id string, n int) *namespace {
	t.Helper()
	return newNamespaceWith(t, id, testEntries(t, id, n))
}

func newNamespaceWith(t *testing.T, id string, entries []*measurelog.Entry) *namespace {
	t.Helper()
	ns := &namespace{list: measurelog.NewList(), entries: entries}
	ns.tpm = startNS(t, id, ns.list)
	if err := ns.tpm.Resync(nil); err != nil {
		t.Fatal(err)
	}
	record(t, ns.list, ns.tpm, ns.entries)
	return ns
}

func clone(t *testing.T, b *Bundle) *Bundle {
	t.Helper()
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestQuoteVerify(t *testing.T) {
	nonce := []byte("verifier-nonce-0123456789")
	a := newNamespace(t, "container-a", 12)
	b := newNamespace(t, "container-b", 9)

	bundleA, err := a.tpm.Quote(nonce)
	if err != nil {
		t.Fatal(err)
	}
	bundleB, err := b.tpm.Quote(nonce)
	if err != nil {
		t.Fatal(err)
	}
	akA, err := ParseAKPEM([]byte(bundleA.AKPEM))
	if err != nil {
		t.Fatal(err)
	}

	// The good bundle, through its JSON form.
	good := clone(t, bundleA)
	if err := Verify(good, nonce, WithTrustedAK(akA), WithID("container-a")); err != nil {
		t.Fatalf("Verify(good bundle): %v", err)
	}
	if good.Entries != 12 || len(good.Quotes) != 2 {
		t.Errorf("bundle has %d entries and %d quotes, want 12 and 2", good.Entries, len(good.Quotes))
	}
	for _, bank := range Banks {
		pcrs := good.PCRs[bank.String()]
		for _, i := range []int{10, 11} {
			tpmv, err := a.tpm.TPM().ReadPCR(bank, i)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pcrs[i], tpmv) {
				t.Errorf("bundle %s PCR %d = %x, TPM has %x", bank, i, []byte(pcrs[i]), tpmv)
			}
		}
	}

	otherNonce := []byte("another-nonce")
	tests := []struct {
		name    string
		mutate  func(b *Bundle)
		nonce   []byte
		opts    []VerifyOption
		want    error
		bank    string
		message string // part of the error text
	}{
		{name: "wrong nonce", nonce: otherNonce, want: ErrNonce, message: "expected " + hexs(otherNonce)},
		{name: "nonce field rewritten to the verifier's", nonce: otherNonce,
			mutate: func(b *Bundle) { b.Nonce = otherNonce }, want: ErrNonce, bank: "sha1", message: "the TPM quoted nonce"},
		{name: "tampered list: a file digest changed", mutate: func(b *Bundle) {
			i := bytes.Index(b.List, []byte("/usr/bin/prog4"))
			b.List[i-10] ^= 0x01 // last byte of the file digest before the n-ng field
		}, want: ErrListMismatch, message: "does not match the template data"},
		{name: "tampered list: an entry replaced, record consistent", mutate: func(b *Bundle) {
			b.List = replaceEntry(t, b.List, 4, testEntries(t, "intruder", 5)[4])
		}, want: ErrListMismatch, bank: "sha1", message: "PCR 10: replaying the 12 entries"},
		{name: "tampered list: last entry dropped", mutate: func(b *Bundle) {
			b.List = dropLastEntry(t, b.List)
			b.Entries--
		}, want: ErrListMismatch, bank: "sha1", message: "PCR 10"},
		{name: "tampered list: entry count", mutate: func(b *Bundle) { b.Entries++ }, want: ErrListMismatch, message: "list has 12 entries, bundle says 13"},
		{name: "tampered list: garbage tail", mutate: func(b *Bundle) { b.List = append(b.List, 1, 2, 3) }, want: ErrListMismatch, message: "decode list"},
		{name: "PCR value changed", mutate: func(b *Bundle) { b.PCRs["sha256"][10][0] ^= 1 }, want: ErrPCRMismatch, bank: "sha256", message: "PCR digest"},
		{name: "PCR dropped from the bundle", mutate: func(b *Bundle) { delete(b.PCRs["sha1"], 11) }, want: ErrPCRMismatch, bank: "sha1", message: "the quote selects"},
		{name: "quote bytes changed", mutate: func(b *Bundle) { b.Quotes[1].Quote[len(b.Quotes[1].Quote)-1] ^= 1 }, want: ErrSignature, bank: "sha256"},
		{name: "signature changed", mutate: func(b *Bundle) { b.Quotes[0].Signature[len(b.Quotes[0].Signature)-1] ^= 1 }, want: ErrSignature, bank: "sha1"},
		{name: "missing bank", mutate: func(b *Bundle) { b.Quotes = b.Quotes[:1] }, want: ErrMalformed, bank: "sha256", message: "no quote"},
		{name: "bad version", mutate: func(b *Bundle) { b.Version = 7 }, want: ErrMalformed},
		{name: "claimed for another id", opts: []VerifyOption{WithID("container-b")}, want: ErrWrongID, message: `expected "container-b"`},

		// Another namespace's quote claimed for this one.
		{name: "B's bundle relabeled as A, A's key pinned", mutate: func(x *Bundle) {
			*x = *clone(t, bundleB)
			x.ID = "container-a"
		}, opts: []VerifyOption{WithTrustedAK(akA), WithID("container-a")}, want: ErrUntrustedAK, message: `"container-a"`},
		{name: "A's list and key with B's quotes", mutate: func(x *Bundle) {
			x.Quotes = clone(t, bundleB).Quotes
			x.PCRs = clone(t, bundleB).PCRs
		}, want: ErrSignature, bank: "sha1", message: "does not verify with the attestation key"},
		{name: "A's list with B's quotes, PCRs and key", mutate: func(x *Bundle) {
			bb := clone(t, bundleB)
			x.Quotes, x.PCRs, x.AKPublic, x.AKPEM = bb.Quotes, bb.PCRs, bb.AKPublic, bb.AKPEM
		}, want: ErrListMismatch, bank: "sha1", message: "PCR 10"},
		{name: "the same, A's key pinned", mutate: func(x *Bundle) {
			bb := clone(t, bundleB)
			x.Quotes, x.PCRs, x.AKPublic, x.AKPEM = bb.Quotes, bb.PCRs, bb.AKPublic, bb.AKPEM
		}, opts: []VerifyOption{WithTrustedAK(akA)}, want: ErrUntrustedAK},
		{name: "ak_pem and ak_public disagree", mutate: func(x *Bundle) { x.AKPEM = bundleB.AKPEM }, want: ErrMalformed, message: "different keys"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bd := clone(t, bundleA)
			if tc.mutate != nil {
				tc.mutate(bd)
			}
			n := nonce
			if tc.nonce != nil {
				n = tc.nonce
			}
			err := Verify(bd, n, tc.opts...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T is not a *VerifyError", err)
			}
			if ve.Bank != tc.bank {
				t.Errorf("failed bank %q, want %q (%v)", ve.Bank, tc.bank, err)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("error %q does not say %q", err, tc.message)
			}
		})
	}
}

// TestQuoteCoversExtendedEntries: entries appended to the list but not yet
// extended are not in the bundle, so the bundle still verifies.
func TestQuoteCoversExtendedEntries(t *testing.T) {
	ns := newNamespace(t, "ns-pending", 5)
	more := testEntries(t, "ns-pending-more", 3)[1:]
	for _, e := range more {
		if !ns.list.Append(e) {
			t.Fatal("append refused")
		}
	}
	b, err := ns.tpm.Quote([]byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if b.Entries != 5 {
		t.Errorf("bundle has %d entries, want the 5 extended ones", b.Entries)
	}
	if err := Verify(b, []byte{1, 2, 3}); err != nil {
		t.Errorf("Verify: %v", err)
	}
	for _, e := range more {
		if err := ns.tpm.Extend(e); err != nil {
			t.Fatal(err)
		}
	}
	b, err = ns.tpm.Quote([]byte{4})
	if err != nil {
		t.Fatal(err)
	}
	if b.Entries != 7 {
		t.Errorf("bundle has %d entries, want 7", b.Entries)
	}
	if err := Verify(b, []byte{4}); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestQuoteBadNonce(t *testing.T) {
	ns := newNamespace(t, "ns-nonce", 2)
	for _, n := range [][]byte{nil, make([]byte, 65)} {
		if _, err := ns.tpm.Quote(n); err == nil {
			t.Errorf("Quote with a %d-byte nonce: no error", len(n))
		}
	}
}

func TestBundleJSON(t *testing.T) {
	ns := newNamespace(t, "ns-json", 3)
	b, err := ns.tpm.Quote([]byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(data, &generic); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "id", "nonce", "ak_public", "ak_pem", "quotes", "pcrs", "entries", "list_bank", "list"} {
		if _, ok := generic[k]; !ok {
			t.Errorf("bundle JSON has no %q", k)
		}
	}
	if generic["nonce"] != "6e" {
		t.Errorf("nonce = %v, want hex 6e", generic["nonce"])
	}
	pcrs := generic["pcrs"].(map[string]any)
	sha256 := pcrs["sha256"].(map[string]any)
	if s, _ := sha256["10"].(string); len(s) != 64 {
		t.Errorf(`pcrs.sha256["10"] = %v, want 64 hex digits`, sha256["10"])
	}
	if _, err := ParseBundle([]byte(`{"version":1,"nonce":"zz"}`)); err == nil {
		t.Error("ParseBundle with a bad hex nonce: no error")
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// dropLastEntry removes the last record of a sha1-bank binary list.
func dropLastEntry(t *testing.T, list []byte) []byte {
	t.Helper()
	entries, err := measurelog.DecodeBinary(list, measurelog.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, e := range entries[:len(entries)-1] {
		out = e.AppendBinary(out, measurelog.SHA1)
	}
	return out
}

// replaceEntry re-encodes a sha1-bank binary list with entry i replaced.
func replaceEntry(t *testing.T, list []byte, i int, e *measurelog.Entry) []byte {
	t.Helper()
	entries, err := measurelog.DecodeBinary(list, measurelog.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	entries[i] = e
	var out []byte
	for _, x := range entries {
		out = x.AppendBinary(out, measurelog.SHA1)
	}
	return out
}
