package measurelog

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const evmctlMatched = "Matched per TPM bank calculated digest(s)."

// evmctl runs `evmctl ima_measurement --pcrs sha1,F --pcrs sha256,F LIST`
// on list with PCR files written from pcrs, and returns its output and
// whether it exited 0.
func evmctl(t *testing.T, list []byte, pcrs *PCRs, extra ...string) (string, bool) {
	t.Helper()
	bin, err := exec.LookPath("evmctl")
	if err != nil {
		t.Skip("evmctl not installed (Debian package ima-evm-utils)")
	}
	dir := t.TempDir()
	files := map[string][]byte{
		"list":            list,
		"pcrs-sha1.txt":   pcrs.EvmctlPCRs(SHA1),
		"pcrs-sha256.txt": pcrs.EvmctlPCRs(SHA256),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args := append([]string{"ima_measurement"}, extra...)
	args = append(args, "--pcrs", "sha1,"+filepath.Join(dir, "pcrs-sha1.txt"),
		"--pcrs", "sha256,"+filepath.Join(dir, "pcrs-sha256.txt"), filepath.Join(dir, "list"))
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err == nil
}

// fromScratch builds lists with NewEntry the way imafs records
// measurements, in several templates.
func fromScratch(t *testing.T, template string, violation bool) []*Entry {
	t.Helper()
	algo := SHA256
	if template == TemplateIMA {
		algo = SHA1
	}
	boot, err := NewBootAggregate(template, nil, algo)
	if err != nil {
		t.Fatal(err)
	}
	entries := []*Entry{boot}
	for i, name := range []string{"/usr/bin/env", "/etc/my config file", "/opt/" + strings.Repeat("x", 300), "/usr/lib/libc.so.6"} {
		m := Measurement{FileDigest: algo.Sum([]byte(name)), FileAlgo: algo, Name: name, Buf: []byte(name), Namespace: "c1", Mode: 0o100755, UID: 1000}
		pcr := uint32(10)
		if i == 3 {
			pcr = 11
		}
		e, err := NewEntry(template, pcr, m)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
		if violation && i == 1 {
			v, err := NewViolation(template, 10, name, algo)
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, v)
		}
	}
	return entries
}

// TestEvmctlAcceptsOurLists: evmctl re-computes the template digests of
// the lists we encode and replays them against PCR files made from our own
// replay; it must report the match, and reject a tampered list.
func TestEvmctlAcceptsOurLists(t *testing.T) {
	type list struct {
		name       string
		entries    []*Entry
		violations bool
	}
	var lists []list
	for _, tmpl := range []string{TemplateIMA, TemplateIMANG, TemplateIMASig, TemplateIMABuf, TemplateIMANGv2, TemplateIMANS} {
		lists = append(lists, list{"scratch/" + tmpl, fromScratch(t, tmpl, false), false})
		lists = append(lists, list{"scratch/" + tmpl + "+violation", fromScratch(t, tmpl, true), true})
	}
	for _, g := range goldenDirs {
		entries, err := DecodeBinary(readGolden(t, g.name, "binary_runtime_measurements"), SHA1)
		if err != nil {
			t.Fatal(err)
		}
		lists = append(lists, list{"golden/" + g.name, entries, g.violations > 0})
	}
	for _, tc := range lists {
		t.Run(tc.name, func(t *testing.T) {
			// Encode through a List, as the FUSE file would serve it.
			l := NewList()
			for _, e := range tc.entries {
				if !l.Append(e) {
					t.Fatal("entry dropped")
				}
			}
			bin := make([]byte, l.Size(Binary, SHA1))
			if _, err := l.ReadAt(bin, 0, Binary, SHA1); err != nil {
				t.Fatal(err)
			}
			pcrs := l.PCRs()
			if replay := Replay(tc.entries, SHA1, SHA256); !bytes.Equal(replay.Value(SHA256, 10), pcrs.Value(SHA256, 10)) {
				t.Fatal("List PCRs differ from Replay")
			}
			var flags []string
			if tc.violations {
				flags = []string{"--ignore-violations"}
			}
			out, ok := evmctl(t, bin, pcrs, flags...)
			if !ok || !strings.Contains(out, evmctlMatched) {
				t.Fatalf("evmctl rejected our list (exit ok=%v):\n%s", ok, out)
			}
			// Tamper with the template data (the name) of entry 1, on PCR 10.
			// (evmctl 1.4 only checks template data digests of entries on
			// PCR 10: it accepts a tampered PCR-11 entry.)
			bad := append([]byte(nil), bin...)
			end1 := len(tc.entries[0].AppendBinary(tc.entries[1].AppendBinary(nil, SHA1), SHA1))
			if tc.entries[1].PCR != 10 || tc.entries[1].Violation {
				t.Fatal("entry 1 is not a PCR-10 measurement")
			}
			bad[end1-8] ^= 0x01
			out, ok = evmctl(t, bad, pcrs, flags...)
			if ok || strings.Contains(out, evmctlMatched) {
				t.Fatalf("evmctl accepted a tampered list:\n%s", out)
			}
			// A list with one PCR-10 entry left out does not match the PCRs.
			// (evmctl only checks the PCRs the list mentions: leaving out the
			// only PCR-11 entry would go unnoticed.)
			var short []byte
			for i, e := range tc.entries {
				if i != len(tc.entries)-2 {
					short = e.AppendBinary(short, SHA1)
				}
			}
			out, ok = evmctl(t, short, pcrs, flags...)
			if ok || strings.Contains(out, evmctlMatched) {
				t.Fatalf("evmctl accepted a list missing its last entry:\n%s", out)
			}
		})
	}
}
