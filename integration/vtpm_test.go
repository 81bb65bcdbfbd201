package integration

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

func randomNonce(t *testing.T) string {
	t.Helper()
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// quoteTo runs `imafs quote ID --nonce N -o FILE`.
func quoteTo(t *testing.T, d *daemon, id, nonce, file string) {
	t.Helper()
	if out, err := d.imafs("quote", id, "--nonce", nonce, "-o", file); err != nil {
		t.Fatalf("quote %s: %v %s", id, err, out)
	}
}

// verify runs `imafs verify FILE --nonce N ARGS...` and returns its output
// and whether it succeeded.
func verify(t *testing.T, file, nonce string, args ...string) (string, bool) {
	t.Helper()
	out, err := exec.Command(imafsBin, append([]string{"verify", file, "--nonce", nonce}, args...)...).CombinedOutput()
	return string(out), err == nil
}

// TestVTPMQuotes: with --vtpm swtpm every container has its own TPM: its
// quote verifies; a tampered list, a wrong nonce and another container's
// quote fail; root in the container gets its own quote from the quote file;
// after a SIGKILL restart the quote still verifies with the same key (the
// vTPM is resynced from the replayed journal).
func TestVTPMQuotes(t *testing.T) {
	harness.RequireTools(t, "swtpm")
	sockets := t.TempDir()
	// A host TPM too (a swtpm standing in): it binds every container's
	// key, and a swtpm socket serves one client, which an upgrade must
	// hand over.
	hostTPM := startHostSWTPM(t)
	flags := []string{"--vtpm", "swtpm", "--vtpm-socket-dir", sockets, "--tpm", hostTPM}
	d := startDaemon(t, flags...)
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("measure func=FILE_CHECK mask=MAY_READ\n"), 0o644)
	cs := map[string]*harness.Unshare{}
	files := t.TempDir()
	for _, id := range []string{"qa", "qb"} {
		cs[id] = busyboxContainer(t, false)
		attachUnshare(t, d, cs[id], id)
		if _, err := d.imafs("policy", id, "--set", pol); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			p := filepath.Join(files, id+itoa(i))
			os.WriteFile(p, []byte(id+itoa(i)), 0o644)
			if _, err := d.imafs("measure", "--id", id, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir := t.TempDir()
	nonce := randomNonce(t)
	fa, fb := filepath.Join(dir, "qa.json"), filepath.Join(dir, "qb.json")
	quoteTo(t, d, "qa", nonce, fa)
	quoteTo(t, d, "qb", nonce, fb)
	akA := filepath.Join(dir, "qa.pem")
	if out, ok := verify(t, fa, nonce, "--id", "qa", "--ak-out", akA); !ok {
		t.Fatalf("qa's quote does not verify: %s", out)
	}
	if out, ok := verify(t, fb, nonce, "--id", "qb"); !ok {
		t.Fatalf("qb's quote does not verify: %s", out)
	}
	if data, _ := os.ReadFile(fa); !strings.Contains(string(data), `"ak_binding"`) {
		t.Error("bundle without the host TPM's binding of the key")
	}
	if out, ok := verify(t, fa, randomNonce(t)); ok {
		t.Errorf("wrong nonce verified: %s", out)
	}
	if out, ok := verify(t, fb, nonce, "--id", "qa"); ok {
		t.Errorf("qb's quote verified as qa's: %s", out)
	}
	if out, ok := verify(t, fb, nonce, "--ak", akA); ok {
		t.Errorf("qb's quote verified with qa's pinned key: %s", out)
	}
	// A tampered list: one byte of the last entry's template data flipped.
	var b map[string]any
	data, _ := os.ReadFile(fa)
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	list, _ := b["list"].(string) // base64
	if len(list) < 20 {
		t.Fatalf("bundle list %q", list)
	}
	i := len(list) - 10
	c := byte('A')
	if list[i] == 'A' {
		c = 'B'
	}
	b["list"] = list[:i] + string(c) + list[i+1:]
	tampered := filepath.Join(dir, "tampered.json")
	data, _ = json.Marshal(b)
	os.WriteFile(tampered, data, 0o644)
	if out, ok := verify(t, tampered, nonce); ok {
		t.Errorf("tampered list verified: %s", out)
	}

	// Root in the container quotes itself through the tree.
	inside := func(id, nonce string) string {
		t.Helper()
		out, err := cs[id].Exec(0, "sh", "-c", "exec 3<>"+ima+"/quote && echo "+nonce+" >&3 && cat <&3")
		if err != nil {
			t.Fatalf("quote from inside %s: %v", id, err)
		}
		f := filepath.Join(dir, id+"-inside.json")
		os.WriteFile(f, []byte(out), 0o644)
		return f
	}
	n2 := randomNonce(t)
	if out, ok := verify(t, inside("qb", n2), n2, "--id", "qb"); !ok {
		t.Errorf("qb's own quote from inside does not verify: %s", out)
	}
	if out, err := cs["qb"].Exec(1000, "sh", "-c", "exec 3<>"+ima+"/quote && echo "+n2+" >&3 && cat <&3"); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("unprivileged quote from inside: %q %v, want EACCES", out, err)
	}

	// After a crash the vTPM is resynced: same key, PCRs equal to the list's.
	kill9(t, d)
	d = restartDaemon(t, d, flags...)
	n3 := randomNonce(t)
	fa2 := filepath.Join(dir, "qa-after.json")
	quoteTo(t, d, "qa", n3, fa2)
	if out, ok := verify(t, fa2, n3, "--id", "qa", "--ak", akA); !ok {
		t.Errorf("qa's quote after the restart does not verify with its pinned key: %s", out)
	}
	data, _ = os.ReadFile(fa2)
	var after struct {
		PCRs map[string]map[string]string `json:"pcrs"`
	}
	json.Unmarshal(data, &after)
	if ps := d.ps(t)["qa"]; after.PCRs["sha256"]["10"] != ps.PCR10SHA256 || after.PCRs["sha1"]["10"] != ps.PCR10SHA1 {
		t.Errorf("quoted PCR 10 %v, ps %+v", after.PCRs, ps)
	}
	n4 := randomNonce(t)
	if out, ok := verify(t, inside("qa", n4), n4, "--id", "qa", "--ak", akA); !ok {
		t.Errorf("qa's own quote from inside after the restart does not verify: %s", out)
	}
	// An upgrade hands the vTPMs over too: the successor's quote verifies
	// with the same key.
	upgradeDaemon(t, d)
	<-d.done
	n5 := randomNonce(t)
	fa3 := filepath.Join(dir, "qa-upgraded.json")
	quoteTo(t, d, "qa", n5, fa3)
	if out, ok := verify(t, fa3, n5, "--id", "qa", "--ak", akA); !ok {
		t.Errorf("qa's quote after the upgrade does not verify with its pinned key: %s", out)
	}
	if data, _ := os.ReadFile(fa3); !strings.Contains(string(data), `"ak_binding"`) {
		t.Error("bundle after the upgrade without the host TPM's binding (host TPM not handed over)")
	}
	// Detach stops the container's vTPM: no more quotes.
	if _, err := d.imafs("detach", "--id", "qb"); err != nil {
		t.Fatal(err)
	}
	if out, err := d.imafs("quote", "qb", "--nonce", n4); err == nil {
		t.Errorf("quote of a detached container: %s", out)
	}
}

// startHostSWTPM runs a swtpm with a raw server socket for --tpm (killed by
// pid at cleanup) and waits until it accepts connections.
func startHostSWTPM(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "tpm.sock")
	os.Mkdir(filepath.Join(dir, "state"), 0o700)
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--server", "type=unixio,path="+sock,
		"--tpmstate", "dir="+filepath.Join(dir, "state"), "--flags", "startup-clear,not-need-init")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// The socket file appears at bind(2), before listen(2).
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("host swtpm %s not accepting", sock)
		}
	}
}
