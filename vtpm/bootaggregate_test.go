package vtpm

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"hash"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/imafs/imafs/measurelog"
)

// simPCRs models PCR extension independently of the TPM and of
// measurelog: new = H(old || digest), from zeros.
type simPCRs struct {
	newHash func() hash.Hash
	regs    [24][]byte
}

func newSim(h func() hash.Hash) *simPCRs {
	s := &simPCRs{newHash: h}
	for i := range s.regs {
		s.regs[i] = make([]byte, h().Size())
	}
	return s
}

func (s *simPCRs) extend(i int, d []byte) {
	h := s.newHash()
	h.Write(s.regs[i])
	h.Write(d)
	s.regs[i] = h.Sum(nil)
}

// aggregate is the expected boot_aggregate, written from the kernel's
// description: H(PCR0 || ... || PCR(last)).
func (s *simPCRs) aggregate(last int) []byte {
	h := s.newHash()
	for i := 0; i <= last; i++ {
		h.Write(s.regs[i])
	}
	return h.Sum(nil)
}

func TestBootAggregate(t *testing.T) {
	sock := startRawSWTPM(t)
	tpm, err := OpenHost(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()

	s1, s256 := newSim(sha1.New), newSim(sha256.New)
	// Firmware-like measurements into PCRs 0-9, several per PCR.
	for round := 0; round < 3; round++ {
		for i := 0; i <= 9; i++ {
			seed := []byte{byte(round), byte(i), 'f', 'w'}
			d1, d256 := sha1.Sum(seed), sha256.Sum256(seed)
			if err := tpm.ExtendPCR(i, map[measurelog.Algo][]byte{measurelog.SHA1: d1[:], measurelog.SHA256: d256[:]}); err != nil {
				t.Fatal(err)
			}
			s1.extend(i, d1[:])
			s256.extend(i, d256[:])
		}
	}
	// PCR 10 must not matter.
	d := sha256.Sum256([]byte("ima"))
	if err := tpm.ExtendPCR(10, map[measurelog.Algo][]byte{measurelog.SHA256: d[:]}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		algo measurelog.Algo
		want []byte
	}{
		{measurelog.SHA1, s1.aggregate(7)},     // sha1: PCRs 0-7 only
		{measurelog.SHA256, s256.aggregate(9)}, // others: PCRs 0-9
	}
	for _, tc := range tests {
		got, err := BootAggregate(tpm, tc.algo)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("BootAggregate(%s) = %x, want %x", tc.algo, got, tc.want)
		}
	}
	if bytes.Equal(s256.aggregate(9), s256.aggregate(7)) {
		t.Fatal("test PCRs 8-9 left unchanged: the test would not notice them missing")
	}

	bank, got, err := KernelBootAggregate(tpm, measurelog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if bank != measurelog.SHA256 || !bytes.Equal(got, s256.aggregate(9)) {
		t.Errorf("KernelBootAggregate(sha256) = %s %x, want sha256 %x", bank, got, s256.aggregate(9))
	}
	bank, got, err = KernelBootAggregate(tpm, measurelog.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	if bank != measurelog.SHA1 || !bytes.Equal(got, s1.aggregate(7)) {
		t.Errorf("KernelBootAggregate(sha1) = %s %x, want sha1 %x", bank, got, s1.aggregate(7))
	}
}

func TestOpenHostErrors(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A socket that is not a TPM: it answers nothing sensible.
	notTPM := filepath.Join(dir, "not-tpm.sock")
	l, err := net.Listen("unix", notTPM)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
		c.Close()
	}()
	for _, p := range []string{filepath.Join(dir, "missing"), regular, notTPM} {
		if tpm, err := OpenHost(p); err == nil {
			tpm.Close()
			t.Errorf("OpenHost(%s): no error", p)
		}
	}
}
