package vtpm

import (
	"errors"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/measurelog"
)

// hostNamespace starts a namespace whose attestation key the host binds.
func hostNamespace(t *testing.T, id string, host *HostAttester, n int) *namespace {
	t.Helper()
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	ns := &namespace{list: measurelog.NewList(), entries: testEntries(t, id, n)}
	v, err := StartSWTPM(SWTPMOptions{ID: id, StateDir: t.TempDir(), List: ns.list, Host: host, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	ns.tpm = v
	if err := v.Resync(nil); err != nil {
		t.Fatal(err)
	}
	record(t, ns.list, v, ns.entries)
	return ns
}

// TestHostBinding: with a host TPM (a swtpm standing in, as the daemon's
// --tpm option allows), one pinned host key tells namespaces apart.
func TestHostBinding(t *testing.T) {
	host, err := OpenHost(startRawSWTPM(t))
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	attester, err := NewHostAttester(host)
	if err != nil {
		t.Fatal(err)
	}
	defer attester.Close()
	hostPEM, err := attester.AKPEM()
	if err != nil {
		t.Fatal(err)
	}
	hostAK, err := ParseAKPEM([]byte(hostPEM))
	if err != nil {
		t.Fatal(err)
	}

	// Another host, to pin the wrong host key.
	other, err := OpenHost(startRawSWTPM(t))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherAttester, err := NewHostAttester(other)
	if err != nil {
		t.Fatal(err)
	}
	defer otherAttester.Close()
	otherPEM, _ := otherAttester.AKPEM()
	otherAK, err := ParseAKPEM([]byte(otherPEM))
	if err != nil {
		t.Fatal(err)
	}

	nonce := []byte("host-bound")
	a := hostNamespace(t, "ns-a", attester, 6)
	b := hostNamespace(t, "ns-b", attester, 4)
	bundleA, err := a.tpm.Quote(nonce)
	if err != nil {
		t.Fatal(err)
	}
	bundleB, err := b.tpm.Quote(nonce)
	if err != nil {
		t.Fatal(err)
	}
	if bundleA.AKBinding == nil {
		t.Fatal("bundle has no ak_binding")
	}
	if err := Verify(clone(t, bundleA), nonce, WithTrustedHostAK(hostAK), WithID("ns-a")); err != nil {
		t.Fatalf("Verify with the host key: %v", err)
	}
	if err := Verify(clone(t, bundleB), nonce, WithTrustedHostAK(hostAK), WithID("ns-b")); err != nil {
		t.Fatalf("Verify B with the host key: %v", err)
	}

	tests := []struct {
		name   string
		mutate func(x *Bundle)
		hostAK any
		want   error
	}{
		{"B's bundle relabeled as A", func(x *Bundle) { *x = *clone(t, bundleB); x.ID = "ns-a" }, hostAK, ErrUntrustedAK},
		{"B's bundle with A's binding", func(x *Bundle) {
			bind := x.AKBinding
			*x = *clone(t, bundleB)
			x.ID, x.AKBinding = "ns-a", bind
		}, hostAK, ErrUntrustedAK},
		{"no binding", func(x *Bundle) { x.AKBinding = nil }, hostAK, ErrUntrustedAK},
		{"another host's key pinned", nil, otherAK, ErrUntrustedAK},
		{"binding PCR changed", func(x *Bundle) { x.AKBinding.PCRs[0][0] ^= 1 }, hostAK, ErrUntrustedAK},
		{"binding host key malformed", func(x *Bundle) { x.AKBinding.HostAKPublic = []byte{1, 2} }, hostAK, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := clone(t, bundleA)
			if tc.mutate != nil {
				tc.mutate(x)
			}
			pub, _ := ParseAKPEM([]byte(hostPEM))
			if tc.hostAK != nil {
				pub = tc.hostAK
			}
			err := Verify(x, nonce, WithTrustedHostAK(pub), WithID("ns-a"))
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
}
