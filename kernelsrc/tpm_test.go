package kernelsrc

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imafs/imafs/measurelog"
)

// readPCR10 reads PCR-10 from an evmctl --pcrs file.
func readPCR10(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PCR-10: "); ok {
			b, err := hex.DecodeString(v)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			return b
		}
	}
	t.Fatalf("%s: no PCR-10", path)
	return nil
}

// TestRealKernelListReplaysToTPM: the lists of patched kernels booted with
// a software TPM (copied out by kernel-patches/test/run --tpm; the series'
// v1, template ima-ns with bare labels, and v2, template ima-nsreg with
// "label:id" tags) replay to the TPM's PCR 10 in both banks, so the tagged
// template data decodes exactly as the kernel hashed it.
func TestRealKernelListReplaysToTPM(t *testing.T) {
	for _, tc := range []struct {
		dir, template string
		labels        []string // labels (before ":id") the list must have
	}{
		{"ima-ns-6.12-tpm", measurelog.TemplateIMANS, []string{"", "k1", "c1", "c2"}},
		{"ima-nsreg-6.12-tpm", measurelog.TemplateIMANSReg, []string{"", "c1", "c2"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join("testdata", tc.dir)
			bin, err := os.ReadFile(filepath.Join(dir, "binary_runtime_measurements"))
			if err != nil {
				t.Fatal(err)
			}
			entries, err := measurelog.DecodeBinary(bin, measurelog.SHA1)
			if err != nil {
				t.Fatal(err)
			}
			pcrs := measurelog.Replay(entries, measurelog.SHA1, measurelog.SHA256)
			for _, bank := range []measurelog.Algo{measurelog.SHA1, measurelog.SHA256} {
				want := readPCR10(t, filepath.Join(dir, "pcrs-"+bank.String()+".txt"))
				if got := pcrs.Value(bank, 10); !bytes.Equal(got, want) {
					t.Errorf("replayed %s PCR 10 = %x, TPM has %x", bank, got, want)
				}
			}
			labels, templates := map[string]int{}, map[string]int{}
			for _, e := range entries {
				label, _, _ := strings.Cut(Label(e), ":")
				labels[label]++
				templates[e.Template]++
			}
			for _, l := range tc.labels {
				if labels[l] == 0 {
					t.Errorf("labels in the list: %v, want entries of %q", labels, l)
				}
			}
			if templates[tc.template] == 0 {
				t.Errorf("templates in the list: %v, want %s entries", templates, tc.template)
			}
		})
	}
}

func TestBootAggregate(t *testing.T) {
	dir := filepath.Join("testdata", "ima-ns-6.12-tpm")
	ascii, err := os.ReadFile(filepath.Join(dir, "ascii_runtime_measurements"))
	if err != nil {
		t.Fatal(err)
	}
	// "10 <sha1> ima-ns sha256:<hex> boot_aggregate "
	fields := strings.Fields(strings.SplitN(string(ascii), "\n", 2)[0])
	want, err := hex.DecodeString(strings.TrimPrefix(fields[3], "sha256:"))
	if err != nil || fields[4] != "boot_aggregate" {
		t.Fatalf("testdata: first line %q", fields)
	}
	get := BootAggregate(filepath.Join(dir, "binary_runtime_measurements"))
	got, err := get(measurelog.SHA256)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("BootAggregate(sha256) = %x, %v; want %x", got, err, want)
	}
	if _, err := get(measurelog.SHA1); err == nil {
		t.Error("BootAggregate(sha1) of a sha256 boot_aggregate: no error")
	}
	if _, err := BootAggregate(filepath.Join(t.TempDir(), "nosuch"))(measurelog.SHA256); err == nil {
		t.Error("BootAggregate of a missing list: no error")
	}
	noBoot := binaryList(kernelEntry(t, "/bin/sh", ""))
	if _, err := firstBootAggregate(bytes.NewReader(noBoot), measurelog.SHA256); err == nil {
		t.Error("list without boot_aggregate first: no error")
	}
	if _, err := firstBootAggregate(bytes.NewReader(nil), measurelog.SHA256); err == nil {
		t.Error("empty list: no error")
	}
}
