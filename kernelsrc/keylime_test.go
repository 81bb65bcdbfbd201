package kernelsrc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// keylimeParse reads an ascii_runtime_measurements list (sha1 bank) the way
// Keylime's IMA validator does, independently of measurelog: only the
// templates ima, ima-ng, ima-sig and ima-buf are known; every line's
// template hash is computed again from its fields and the PCRs replayed
// (a zero hash, a violation, extends 0xff..). It returns the replayed PCRs.
func keylimeParse(ascii []byte) (map[int][]byte, error) {
	pcrs := map[int][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(ascii))
	for n := 1; sc.Scan(); n++ {
		tok := strings.Split(sc.Text(), " ")
		if len(tok) < 5 {
			return nil, fmt.Errorf("line %d: Line was not parsable into a valid IMA entry", n)
		}
		pcr, err := strconv.Atoi(tok[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: pcr: %w", n, err)
		}
		hash, err := hex.DecodeString(tok[1])
		if err != nil || len(hash) != sha1.Size {
			return nil, fmt.Errorf("line %d: template hash %q", n, tok[1])
		}
		data, err := keylimeTemplateData(tok[2], tok[3:])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		ext := hash
		if bytes.Equal(hash, make([]byte, sha1.Size)) {
			ext = bytes.Repeat([]byte{0xff}, sha1.Size)
		} else if sum := sha1.Sum(data); !bytes.Equal(sum[:], hash) {
			return nil, fmt.Errorf("line %d: template hash %x, fields hash to %x", n, hash, sum)
		}
		old := pcrs[pcr]
		if old == nil {
			old = make([]byte, sha1.Size)
		}
		sum := sha1.Sum(append(append([]byte(nil), old...), ext...))
		pcrs[pcr] = sum[:]
	}
	return pcrs, sc.Err()
}

// keylimeTemplateData rebuilds the hashed template data of a line's fields.
func keylimeTemplateData(template string, f []string) ([]byte, error) {
	lenPrefixed := func(dst, b []byte) []byte {
		return append(binary.LittleEndian.AppendUint32(dst, uint32(len(b))), b...)
	}
	digestNG := func(s string) ([]byte, error) {
		algo, h, ok := strings.Cut(s, ":")
		d, err := hex.DecodeString(h)
		if !ok || err != nil {
			return nil, fmt.Errorf("digest %q", s)
		}
		return append([]byte(algo+":\x00"), d...), nil
	}
	switch {
	case template == "ima" && len(f) == 2:
		d, err := hex.DecodeString(f[0])
		if err != nil {
			return nil, fmt.Errorf("digest %q", f[0])
		}
		name := make([]byte, 256)
		copy(name, f[1])
		return append(d, name...), nil
	case template == "ima-ng" && len(f) == 2, template == "ima-sig" && (len(f) == 2 || len(f) == 3), template == "ima-buf" && len(f) == 3:
		d, err := digestNG(f[0])
		if err != nil {
			return nil, err
		}
		out := lenPrefixed(lenPrefixed(nil, d), append([]byte(f[1]), 0))
		if template != "ima-ng" {
			var extra []byte
			if len(f) == 3 {
				if extra, err = hex.DecodeString(f[2]); err != nil {
					return nil, fmt.Errorf("hex field %q", f[2])
				}
			}
			out = lenPrefixed(out, extra)
		}
		return out, nil
	}
	return nil, fmt.Errorf("template %q with %d fields: Line was not parsable into a valid IMA entry", template, len(f))
}

func listRendering(t *testing.T, l *measurelog.List, f measurelog.Format) []byte {
	t.Helper()
	buf := make([]byte, l.Size(f, measurelog.SHA1))
	n, err := l.ReadAt(buf, 0, f, measurelog.SHA1)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return buf[:n]
}

func decodeList(t *testing.T, l *measurelog.List) []*measurelog.Entry {
	t.Helper()
	es, err := measurelog.DecodeBinary(listRendering(t, l, measurelog.Binary), measurelog.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// evmctlCheck runs `evmctl ima_measurement` on l's binary list against
// PCR files of l's PCRs, and reports whether it matched.
func evmctlCheck(t *testing.T, l *measurelog.List) (string, bool) {
	t.Helper()
	bin, err := exec.LookPath("evmctl")
	if err != nil {
		t.Skip("evmctl not installed (Debian package ima-evm-utils)")
	}
	dir := t.TempDir()
	pcrs := l.PCRs()
	// Violations extend 0xff..: --ignore-violations replays them so.
	args := []string{"ima_measurement", "--ignore-violations"}
	for name, b := range map[string][]byte{
		"list": listRendering(t, l, measurelog.Binary), "sha1": pcrs.EvmctlPCRs(measurelog.SHA1), "sha256": pcrs.EvmctlPCRs(measurelog.SHA256),
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if name != "list" {
			args = append(args, "--pcrs", name+","+p)
		}
	}
	out, err := exec.Command(bin, append(args, filepath.Join(dir, "list"))...).CombinedOutput()
	return string(out), err == nil && strings.Contains(string(out), "Matched per TPM bank calculated digest(s).")
}

// kernelTest is a registry on a state directory with container c1
// attached (a real pid namespace), and a fake kernel list file.
type kernelTest struct {
	t     *testing.T
	state string
	list  string
	reg   *imans.Registry
	c1    *imans.Namespace
	pidNS string // "pid:[INODE]" of c1
}

func newKernelTest(t *testing.T) *kernelTest {
	harness.RequireRoot(t)
	kt := &kernelTest{t: t, state: t.TempDir(), list: filepath.Join(t.TempDir(), "binary_runtime_measurements")}
	boot, err := measurelog.NewBootAggregate(measurelog.TemplateIMANS, measurelog.SHA256.Sum([]byte("tpm")), measurelog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kt.list, binaryList(boot), 0o600); err != nil {
		t.Fatal(err)
	}
	kt.open()
	c1, err := kt.reg.Attach("c1", harness.StartSleeper(t).Pid, []byte(`{"ociVersion":"1.0.2"}`))
	if err != nil {
		t.Fatal(err)
	}
	kt.c1, kt.pidNS = c1, fmt.Sprintf("pid:[%d]", c1.Pinned.PidNS.Ino)
	return kt
}

// open starts a registry on the state directory (a daemon start) and
// restores c1.
func (kt *kernelTest) open() {
	l := logrus.New()
	l.SetOutput(io.Discard)
	p, err := policy.Parse("measure func=BPRM_CHECK\n")
	if err != nil {
		kt.t.Fatal(err)
	}
	kt.reg, err = imans.NewRegistry(imans.Options{StateDir: kt.state, Log: l, DefaultContainerPolicy: p, BootAggregate: BootAggregate(kt.list)})
	if err != nil {
		kt.t.Fatal(err)
	}
	kt.reg.Restore()
	kt.c1, _ = kt.reg.Get("c1")
}

// kernelAppends appends entries to the kernel list and lets a Source
// rendering containers' lists as tmpl read the whole list (the cursor
// skips what an earlier Source recorded).
func (kt *kernelTest) kernelAppends(tmpl string, entries ...*measurelog.Entry) {
	t := kt.t
	f, err := os.OpenFile(kt.list, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(binaryList(entries...)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	bootID := filepath.Join(kt.state, "boot_id")
	if err := os.WriteFile(bootID, []byte("boot-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := New(kt.reg, Options{ListPath: kt.list, ContainerTemplate: tmpl, CursorPath: filepath.Join(kt.state, "kernel.cursor"), BootIDPath: bootID, Log: quietLog()})
	r, err := os.Open(kt.list)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.tail(ctx, r); err != nil {
		t.Fatalf("tail: %v", err)
	}
}

// restart closes the registry and opens it again on the same state; the
// lists must come back byte for byte.
func (kt *kernelTest) restart() {
	host, c1 := listRendering(kt.t, kt.reg.Host().List, measurelog.Binary), listRendering(kt.t, kt.c1.List, measurelog.Binary)
	kt.reg.Close()
	kt.open()
	if kt.c1 == nil {
		kt.t.Fatal("c1 not restored")
	}
	if !bytes.Equal(listRendering(kt.t, kt.reg.Host().List, measurelog.Binary), host) || !bytes.Equal(listRendering(kt.t, kt.c1.List, measurelog.Binary), c1) {
		kt.t.Error("lists rendered differently after a restart")
	}
}

// c1Stream is what the kernel appends once c1 is registered as c1:<id>.
func (kt *kernelTest) c1Stream(id int, suffix string) []*measurelog.Entry {
	t := kt.t
	tag := fmt.Sprintf("c1:%d", id)
	viol, err := measurelog.NewFileViolation(measurelog.TemplateIMANSReg, 10, measurelog.Measurement{Name: "/etc/w" + suffix, FileAlgo: measurelog.SHA256, Namespace: tag})
	if err != nil {
		t.Fatal(err)
	}
	return []*measurelog.Entry{
		registerRecord(t, tag+" "+kt.pidNS),
		kernelEntry(t, "/bin/sh", ""),
		kernelEntry(t, "/bin/sh"+suffix, tag),
		kernelEntry(t, "/usr/bin/other", "c9:99"),
		customEntry(t, "d-ng|n-ng|sig|ns", "/usr/bin/signed"+suffix, tag, imaSig),
		viol,
		kernelEntry(t, "/usr/lib/libc.so.6"+suffix, tag),
	}
}

// TestKeylimeReadsContainerList: with the kernel source, a container's list
// holds only templates Keylime knows (ima-ng, ima-sig), its template hashes
// and PCRs check with a Keylime-style parser and with evmctl, it is bound to
// the host list's ima-nsreg entries, and a restarted daemon renders it the
// same. The host list keeps the kernel's ima-nsreg entries.
func TestKeylimeReadsContainerList(t *testing.T) {
	kt := newKernelTest(t)
	defer func() { kt.reg.Close() }()
	kt.kernelAppends(ContainerNG, kt.c1Stream(1, "")...)

	ascii := listRendering(t, kt.c1.List, measurelog.ASCII)
	for _, line := range strings.Split(strings.TrimSpace(string(ascii)), "\n") {
		if tmpl := strings.Fields(line)[2]; tmpl != "ima-ng" && tmpl != "ima-sig" && tmpl != "ima-buf" {
			t.Errorf("c1's list has a %s line: %s", tmpl, line)
		}
	}
	if got := kt.c1.List.Len(); got != 6 {
		t.Errorf("c1's list has %d entries, want 6 (boot_aggregate, oci-config, 3 files, a violation):\n%s", got, ascii)
	}
	pcrs, err := keylimeParse(ascii)
	if err != nil {
		t.Fatalf("Keylime-style parser rejects c1's list: %v\n%s", err, ascii)
	}
	if got, want := pcrs[10], kt.c1.List.PCR(measurelog.SHA1, 10); !bytes.Equal(got, want) {
		t.Errorf("Keylime-style replay of c1's list: PCR 10 %x, c1's PCR 10 %x", got, want)
	}
	if out, ok := evmctlCheck(t, kt.c1.List); !ok {
		t.Errorf("evmctl ima_measurement on c1's list:\n%s", out)
	}
	// The host list: the kernel's ima-nsreg entries, which this parser (and
	// Keylime) rejects; evmctl replays it.
	hostASCII := listRendering(t, kt.reg.Host().List, measurelog.ASCII)
	if !bytes.Contains(hostASCII, []byte(" ima-nsreg ")) {
		t.Errorf("host list has no ima-nsreg entry:\n%s", hostASCII)
	}
	if _, err := keylimeParse(hostASCII); err == nil {
		t.Error("Keylime-style parser accepts ima-nsreg lines")
	}
	if out, ok := evmctlCheck(t, kt.reg.Host().List); !ok {
		t.Errorf("evmctl ima_measurement on the host list:\n%s", out)
	}
	if err := VerifyBinding(decodeList(t, kt.reg.Host().List), decodeList(t, kt.c1.List), "c1", kt.pidNS); err != nil {
		t.Errorf("c1's list not bound to the host list: %v", err)
	}
	kt.restart()
	if err := VerifyBinding(decodeList(t, kt.reg.Host().List), decodeList(t, kt.c1.List), "c1", kt.pidNS); err != nil {
		t.Errorf("after a restart, c1's list not bound to the host list: %v", err)
	}
	// The journals are the lists: the binding holds between them too
	// (docs/operations.md).
	var journals [2][]*measurelog.Entry
	for i, p := range []string{"host.journal", filepath.Join("ns", "c1", "list.journal")} {
		b, err := os.ReadFile(filepath.Join(kt.state, p))
		if err == nil {
			journals[i], err = measurelog.DecodeBinary(b, measurelog.SHA1)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := VerifyBinding(journals[0], journals[1], "c1", kt.pidNS); err != nil {
		t.Errorf("c1's journal not bound to the host's: %v", err)
	}
}

// TestOldJournalIMANS: a container journal written by a daemon that kept
// ima-nsreg entries (--kernel-container-template ima-nsreg, or an imafs before
// it) loads unchanged; a daemon rendering ima-ng continues the list, which
// stays bound to the host list, and renders it the same after a restart.
func TestOldJournalIMANS(t *testing.T) {
	kt := newKernelTest(t)
	defer func() { kt.reg.Close() }()
	kt.kernelAppends(ContainerNS, kt.c1Stream(1, "")...)
	old := listRendering(t, kt.c1.List, measurelog.ASCII)
	if n := bytes.Count(old, []byte(" ima-nsreg ")); n != 3 {
		t.Errorf("c1's list has %d ima-nsreg lines with ContainerNS, want 3:\n%s", n, old)
	}
	kt.restart()
	kt.kernelAppends(ContainerNG, kt.c1Stream(3, "-new")...)
	now := listRendering(t, kt.c1.List, measurelog.ASCII)
	if !bytes.HasPrefix(now, old) || bytes.Count(now, []byte(" ima-nsreg ")) != 3 || kt.c1.List.Len() != 10 {
		t.Errorf("c1's list after the new daemon:\n%s\nwant the old list and 4 ima-ng/ima-sig entries after it", now)
	}
	if out, ok := evmctlCheck(t, kt.c1.List); !ok {
		t.Errorf("evmctl ima_measurement on c1's mixed list:\n%s", out)
	}
	if err := VerifyBinding(decodeList(t, kt.reg.Host().List), decodeList(t, kt.c1.List), "c1", kt.pidNS); err != nil {
		t.Errorf("mixed list not bound to the host list: %v", err)
	}
	kt.restart()
}
