package integration

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imafs/imafs/measurelog"
)

// TestVerifierReadsContainerList: what a container reads from its
// binary_runtime_measurements replays to the PCR 10 `imafs ps` reports, in
// both banks, and evmctl (a real verifier) matches it.
func TestVerifierReadsContainerList(t *testing.T) {
	d := startDaemon(t)
	c := busyboxContainer(t, false)
	attachUnshare(t, d, c, "verify")
	if _, err := c.Exec(0, "sh", "-c", "echo 'measure func=FILE_CHECK' > "+ima+"/policy"); err != nil {
		t.Fatal(err)
	}
	for i, content := range []string{"one\n", "two\n", "three\n"} {
		f := filepath.Join(t.TempDir(), "f")
		os.WriteFile(f, []byte(content), 0o644)
		if _, err := d.imafs("measure", "--id", "verify", "--name", fmt.Sprintf("/file %d", i), f); err != nil {
			t.Fatal(err)
		}
	}
	row := d.ps(t)["verify"]
	for _, bank := range []measurelog.Algo{measurelog.SHA1, measurelog.SHA256} {
		name := ima + "/binary_runtime_measurements_" + bank.String()
		bin, err := c.Exec(0, "cat", name)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := measurelog.DecodeBinary([]byte(bin), bank)
		if err != nil || len(entries) != row.Entries {
			t.Fatalf("%s: %d entries, %v; ps says %d", name, len(entries), err, row.Entries)
		}
		got := hex.EncodeToString(measurelog.Replay(entries, bank).Value(bank, 10))
		want := row.PCR10SHA1
		if bank == measurelog.SHA256 {
			want = row.PCR10SHA256
		}
		if got != want {
			t.Errorf("%s replays to PCR 10 %s, ps says %s", bank, got, want)
		}
	}
	evmctl, err := exec.LookPath("evmctl")
	if err != nil {
		t.Skip("evmctl not installed")
	}
	dir := t.TempDir()
	bin, err := c.Exec(0, "cat", ima+"/binary_runtime_measurements")
	if err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "binary_runtime_measurements")
	os.WriteFile(list, []byte(bin), 0o644)
	var pcrs strings.Builder
	for i := 0; i < 24; i++ {
		v := strings.Repeat("0", 40)
		if i == 10 {
			v = row.PCR10SHA1
		}
		fmt.Fprintf(&pcrs, "PCR-%02d: %s\n", i, v)
	}
	pcrFile := filepath.Join(dir, "pcrs-sha1.txt")
	os.WriteFile(pcrFile, []byte(pcrs.String()), 0o644)
	out, err := exec.Command(evmctl, "ima_measurement", "--pcrs", "sha1,"+pcrFile, list).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Matched per TPM bank") {
		t.Errorf("evmctl ima_measurement: %v\n%s", err, out)
	}
}
