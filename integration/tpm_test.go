package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHostTPMBootAggregate: with --tpm, boot_aggregate is computed from the
// host TPM's PCRs 0-9 (sha256 bank), here a fresh swtpm whose PCRs are zero.
func TestHostTPMBootAggregate(t *testing.T) {
	needDaemon(t)
	swtpm, err := exec.LookPath("swtpm")
	if err != nil {
		t.Skip("needs swtpm")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "tpm.sock")
	os.Mkdir(filepath.Join(dir, "state"), 0o700)
	cmd := exec.Command(swtpm, "socket", "--tpm2", "--server", "type=unixio,path="+sock,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--tpmstate", "dir="+filepath.Join(dir, "state"), "--flags", "startup-clear,not-need-init")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
	}
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
