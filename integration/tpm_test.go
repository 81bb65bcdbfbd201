package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostTPMBootAggregate: with --tpm, boot_aggregate is computed from the
// host TPM's PCRs 0-9 (sha256 bank), here a fresh swtpm whose PCRs are zero.
func TestHostTPMBootAggregate(t *testing.T) {
	needDaemon(t)
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("needs swtpm")
	}
	sock := startHostSWTPM(t)
	d := startDaemon(t, "--tpm", sock)
	list, err := os.ReadFile(filepath.Join(d.hostMnt, "ima/ascii_runtime_measurements"))
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(make([]byte, 10*32))
	f := strings.Fields(lines(string(list))[0])
	if len(f) != 5 || f[4] != "boot_aggregate" || f[3] != "sha256:"+hex.EncodeToString(want[:]) {
		t.Errorf("boot_aggregate line %q, want sha256:%x (PCRs 0-9 of a fresh TPM)", lines(string(list))[0], want)
	}
}
