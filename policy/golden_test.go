package policy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goldenDir = "testdata/kernel-6.12"

type corpusEntry struct {
	Line          int      `json:"line"`
	Input         string   `json:"input"`
	Accepted      bool     `json:"accepted"`
	Canonical     []string `json:"canonical"`
	NotInReadback bool     `json:"not_in_readback"`
}

func loadCorpus(t testing.TB) []corpusEntry {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(goldenDir, "policy-corpus.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c []corpusEntry
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if len(c) == 0 {
		t.Fatal("empty corpus")
	}
	return c
}

// TestKernelCorpus checks every corpus line against what the real kernel
// did with it: accepted or not, and its read-back. The corpus was written
// after a custom policy was loaded, hence the zero ParseOptions.
func TestKernelCorpus(t *testing.T) {
	for _, e := range loadCorpus(t) {
		t.Run(e.Input, func(t *testing.T) {
			r, err := ParseRuleOptions(e.Input, ParseOptions{HashAlgos: Kernel612HashAlgos})
			if !e.Accepted {
				if err == nil {
					t.Fatalf("kernel rejected it, we accepted %q", r)
				}
				var pe *ParseError
				if !asParseError(err, &pe) || pe.Reason == "" || !strings.HasPrefix(err.Error(), "line 1: ") {
					t.Fatalf("error %v is not a *ParseError with a reason", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("kernel accepted it, we rejected: %v", err)
			}
			if r == nil {
				t.Fatal("no rule")
			}
			got := Policy{r}.String()
			want := ""
			for _, l := range e.Canonical {
				want += l + "\n"
			}
			if got != want {
				t.Errorf("read-back\n got %q\nwant %q", got, want)
			}
			if r.Active() == e.NotInReadback {
				t.Errorf("Active() = %v, not_in_readback = %v", r.Active(), e.NotInReadback)
			}
		})
	}
}

func TestTCBReadback(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(goldenDir, "policy-extra", "policy-tcb-readback"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := BuiltIn("tcb")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != string(want) {
		t.Errorf("tcb read-back\n got %q\nwant %q", got, want)
	}
	// The kernel's read-back parses back to the same policy.
	rules, err := Parse(string(want))
	if err != nil {
		t.Fatal(err)
	}
	if got := Policy(rules).String(); got != string(want) {
		t.Errorf("re-parsed tcb read-back\n got %q\nwant %q", got, want)
	}
}
