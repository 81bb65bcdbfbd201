package vtpm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// writeEvmctlPCRs writes a bank's quoted PCRs in the "PCR-NN: hex" form
// evmctl's --pcrs reads (PCRs the quote does not cover as zeros).
func writeEvmctlPCRs(t *testing.T, path string, p BankPCRs, size int) {
	t.Helper()
	var b strings.Builder
	for i := 0; i <= maxPCR; i++ {
		v, ok := p[i]
		if !ok {
			v = make([]byte, size)
		}
		fmt.Fprintf(&b, "PCR-%02d: %x\n", i, []byte(v))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEvmctlAcceptsBundle: an independent verifier, evmctl (ima-evm-utils),
// replays the bundle's list to the quoted PCR values in each bank, and
// refuses them when a quoted value is changed.
func TestEvmctlAcceptsBundle(t *testing.T) {
	if _, err := exec.LookPath("evmctl"); err != nil {
		t.Skip("evmctl not installed (apt-get install -y --no-install-recommends ima-evm-utils)")
	}
	// The list mixes ima-ng, our ima-ns (evmctl 1.4 warns "Template ima-ns
	// contains unprocessed data" while printing it, and replays it right:
	// the template digest covers the raw template data), a violation, and
	// PCR 11.
	entries := testEntries(t, "ns-evmctl", 30)
	ns := newNamespaceWith(t, "ns-evmctl", entries)
	b, err := ns.tpm.Quote([]byte("evmctl"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	list := filepath.Join(dir, "binary_runtime_measurements")
	if err := os.WriteFile(list, b.List, 0o600); err != nil {
		t.Fatal(err)
	}
	sha1File, sha256File := filepath.Join(dir, "pcrs-sha1"), filepath.Join(dir, "pcrs-sha256")
	// --ignore-violations makes evmctl replay a violation as the kernel
	// extends it (all 0xff, ima_queue.c); without it evmctl extends the
	// zero template digest and no kernel list with violations matches.
	evmctl := func(bank string) (string, error) {
		out, err := exec.Command("evmctl", "ima_measurement", "--ignore-violations", "--pcrs", "sha1,"+sha1File,
			"--pcrs", "sha256,"+sha256File, "--verify-bank="+bank, list).CombinedOutput()
		return string(out), err
	}
	writeEvmctlPCRs(t, sha1File, b.PCRs["sha1"], 20)
	writeEvmctlPCRs(t, sha256File, b.PCRs["sha256"], 32)
	for _, bank := range []string{"sha1", "sha256"} {
		if out, err := evmctl(bank); err != nil {
			t.Errorf("evmctl --verify-bank=%s on the bundle: %v\n%s", bank, err, out)
		}
	}
	tampered := BankPCRs{}
	for i, v := range b.PCRs["sha256"] {
		tampered[i] = append(Hex(nil), v...)
	}
	tampered[10][0] ^= 1
	writeEvmctlPCRs(t, sha256File, tampered, 32)
	if out, err := evmctl("sha256"); err == nil {
		t.Errorf("evmctl accepted a changed sha256 PCR 10:\n%s", out)
	}
}
