package integration

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// TestFanotifyTemplates: root in a runc container (rootfs a tmpfs this test
// mounts) loads one `measure func=BPRM_CHECK fowner=N template=T` rule per
// template the policy accepts and executes one copy of busybox per rule
// (owned by N) under `imafs serve --fanotify`. Each template gets exactly
// one entry, read from inside the container in the ascii and binary lists:
// the ima template's digest is the file's SHA-1 (sha1sum) while the
// namespace hashes in sha256; the others carry the sha256 (sha256sum), the
// signatures and EVM attributes of the file, ima-buf an empty buffer,
// ima-modsig empty modsig fields. A file read while open for write under
// an evm-sig rule gets an open_writers violation record that keeps
// security.evm, the owner and the mode, as ima_add_violation does. The
// binary list decodes with measurelog
// (template digests checked) into the same lines as the ascii list and
// replays to the PCR 10 the daemon reports, in both banks.
func TestFanotifyTemplates(t *testing.T) {
	needFanotifyDaemon(t)
	harness.RequireTools(t, "sha1sum")
	d := startDaemon(t, "--fanotify")
	var copies []string
	for _, tm := range policy.Templates {
		copies = append(copies, tm.Name)
	}
	root := tmpfsRootfs(t, copies...)
	sig := []byte{0x03, 0x02, 0x04, 0x01, 0x02, 0x03, 0x04, 0x00, 0x02, 0xab, 0xcd} // an ima signature's layout (v2, sha256, keyid, 2 bytes)
	evm := []byte{0x05, 0x02, 0x04, 0x05, 0x06, 0x07, 0x08, 0x00, 0x02, 0xef, 0x01} // a portable EVM signature's
	var rules strings.Builder
	for i, name := range copies {
		path := filepath.Join(root, "bin", "busybox-"+name)
		if err := os.Chown(path, 6000+i, 0); err != nil {
			t.Fatal(err)
		}
		for x, v := range map[string][]byte{"security.ima": sig, "security.evm": evm} {
			if err := unix.Setxattr(path, x, v, 0); err != nil {
				t.Skipf("setxattr %s on the tmpfs rootfs: %v", x, err)
			}
		}
		fmt.Fprintf(&rules, "measure func=BPRM_CHECK mask=MAY_EXEC fowner=%d template=%s\n", 6000+i, name)
	}
	// A file read while open for write: an open_writers violation record,
	// which keeps what the kernel reads from the file (evmsig, ids, mode).
	viol := filepath.Join(root, "viol")
	if err := os.WriteFile(viol, []byte("written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(viol, 6100, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(viol, 0o666); err != nil { // the container's root has no CAP_DAC_OVERRIDE
		t.Fatal(err)
	}
	if err := unix.Setxattr(viol, "security.evm", evm, 0); err != nil {
		t.Fatal(err)
	}
	rules.WriteString("measure func=FILE_CHECK mask=MAY_READ fowner=6100 template=evm-sig\n")
	c := harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Rootfs: root, Capabilities: []string{"CAP_SYS_ADMIN"}})
	runIn(t, c, "sh", "-c", "printf '"+rules.String()+"' > "+ima+"/policy")
	for _, name := range copies {
		runIn(t, c, "/bin/busybox-"+name, "true")
	}
	runIn(t, c, "sh", "-c", "exec 3>>/viol; cat /viol > /dev/null; exec 3>&-")
	ascii := runIn(t, c, "cat", ima+"/ascii_runtime_measurements")
	bin := runIn(t, c, "cat", ima+"/binary_runtime_measurements")

	for i, name := range copies {
		path := filepath.Join(root, "bin", "busybox-"+name)
		got := measured(ascii, "/bin/busybox-"+name)
		if len(got) != 1 {
			t.Errorf("%s: %d entries for /bin/busybox-%s, want 1\n%s", name, len(got), name, ascii)
			continue
		}
		// The line as the ascii list prints it, after "10 <template digest> ".
		want := templateLine(t, name, path, 6000+i, c.ID, sig, evm)
		if line := strings.SplitN(got[0], " ", 3)[2]; line != want {
			t.Errorf("%s entry:\n got %q\nwant %q", name, line, want)
		}
		if f := strings.Fields(got[0]); name == measurelog.TemplateIMA && f[3] != sumOf(t, "sha1sum", path) {
			t.Errorf("ima entry digest %s, sha1sum says %s", f[3], sumOf(t, "sha1sum", path))
		}
	}

	zeros := strings.Repeat("0", 64)
	if got, want := measured(ascii, "/viol"), "10 "+strings.Repeat("0", 40)+" evm-sig sha256:"+zeros+" /viol "+hex.EncodeToString(evm)+"    6100 0 33206"; len(got) < 1 || got[0] != want {
		t.Errorf("open_writers violation of /viol: %q, want first %q", got, want)
	}

	// The binary list: measurelog's decoder checks each record's template
	// digest (sha1 bank) and renders the ascii list back.
	entries, err := measurelog.DecodeBinary([]byte(bin), measurelog.SHA1)
	if err != nil {
		t.Fatalf("decode the binary list: %v", err)
	}
	var back bytes.Buffer
	for _, e := range entries {
		back.Write(e.AppendASCII(nil, measurelog.SHA1))
	}
	if back.String() != ascii {
		t.Errorf("binary list decoded:\n%s\nascii list:\n%s", back.String(), ascii)
	}
	// Replayed, the list gives the PCR 10 the daemon reports for the
	// container in both banks, also from the sha256 binary list. (evmctl
	// 1.4 refuses a list mixing "ima" with other templates, as a kernel
	// with such rules writes it: "Mixed measurement list ... not supported".)
	bin256 := runIn(t, c, "cat", ima+"/binary_runtime_measurements_sha256")
	entries256, err := measurelog.DecodeBinary([]byte(bin256), measurelog.SHA256)
	if err != nil || len(entries256) != len(entries) {
		t.Fatalf("decode the sha256 binary list: %d entries, %v", len(entries256), err)
	}
	row := d.ps(t)[c.ID]
	for _, tc := range []struct {
		bank    measurelog.Algo
		entries []*measurelog.Entry
		want    string
	}{{measurelog.SHA1, entries, row.PCR10SHA1}, {measurelog.SHA256, entries256, row.PCR10SHA256}} {
		if got := hex.EncodeToString(measurelog.Replay(tc.entries, tc.bank).Value(tc.bank, 10)); got != tc.want {
			t.Errorf("replayed %s PCR 10 %s, the daemon reports %s", tc.bank, got, tc.want)
		}
	}
	host, err := os.ReadFile(filepath.Join(d.hostMnt, "ima/ascii_runtime_measurements"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range copies {
		if len(measured(string(host), "/bin/busybox-"+name)) != 1 {
			t.Errorf("host list lacks the %s entry", name)
		}
	}
}

// templateLine is what the kernel prints after the template digest for
// an exec of path measured through template, from the file itself
// (sha1sum, sha256sum) and its attributes, spelled out per field.
func templateLine(t *testing.T, template, path string, uid int, label string, sig, evm []byte) string {
	t.Helper()
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s1, s256 := sha1.Sum(content), sha256.Sum256(content)
	if hex.EncodeToString(s256[:]) != sumOf(t, "sha256sum", path) {
		t.Fatalf("sha256 of %s differs from sha256sum", path)
	}
	name := "/bin/busybox-" + template
	dng := "sha256:" + hex.EncodeToString(s256[:])
	sigHex, evmHex := hex.EncodeToString(sig), hex.EncodeToString(evm)
	switch template {
	case "ima":
		return "ima " + hex.EncodeToString(s1[:]) + " " + name
	case "ima-ng":
		return "ima-ng " + dng + " " + name
	case "ima-sig":
		return "ima-sig " + dng + " " + name + " " + sigHex
	case "ima-ngv2":
		return "ima-ngv2 ima:" + dng + " " + name
	case "ima-sigv2":
		return "ima-sigv2 ima:" + dng + " " + name + " " + sigHex
	case "ima-buf":
		return "ima-buf " + dng + " " + name + " "
	case "ima-modsig":
		return "ima-modsig " + dng + " " + name + " " + sigHex + "  "
	case "evm-sig":
		// evmsig, xattrnames (security.ima only: no SELinux label or
		// capability here), xattrlengths (u32 LE), xattrvalues, iuid,
		// igid, imode.
		return fmt.Sprintf("evm-sig %s %s %s security.ima %02x000000 %s %d 0 %d", dng, name, evmHex, len(sig), sigHex, uid, unix.S_IFREG|0o755)
	case "ima-ns", "ima-nsreg":
		// The daemon's own records of both are imafs's ima-ns: the
		// container ID in ns (ima-nsreg's "label:id" is the kernel's).
		return "ima-ns " + dng + " " + name + " " + label
	}
	t.Fatalf("no expected line for template %s", template)
	return ""
}

func sumOf(t *testing.T, tool, path string) string {
	t.Helper()
	out, err := exec.Command(tool, path).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", tool, path, err)
	}
	return strings.Fields(string(out))[0]
}
