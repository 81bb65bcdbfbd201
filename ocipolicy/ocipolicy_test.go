package ocipolicy

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imafs/imafs/policy"
)

func config(t *testing.T, annotations map[string]string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"ociVersion": "1.0.2", "annotations": annotations})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPolicy(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(dir, "exec"), []byte("measure func=BPRM_CHECK\nmeasure func=FILE_CHECK mask=MAY_READ uid=0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "bad"), []byte("measure func=NOPE\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "big"), []byte(strings.Repeat("measure func=BPRM_CHECK\n", 100)), 0o644)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("measure func=BPRM_CHECK\n"), 0o644)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "escape"))
	os.Mkdir(filepath.Join(dir, "..data"), 0o755)
	os.WriteFile(filepath.Join(dir, "..data", "cm"), []byte("measure func=BPRM_CHECK\n"), 0o644)
	os.Symlink("..data/cm", filepath.Join(dir, "cm")) // a ConfigMap volume's layout
	os.Mkdir(filepath.Join(dir, "subdir"), 0o755)
	small := policy.Limits{MaxRules: 10, MaxBytes: 1 << 20}
	for _, tc := range []struct {
		name    string
		dir     string
		ann     map[string]string
		rules   int
		wantErr error // nil: success; errAny: any error
	}{
		{"none", dir, nil, 0, nil},
		{"other annotations", dir, map[string]string{"io.kubernetes.pod.name": "x"}, 0, nil},
		{"inline", "", map[string]string{Inline: "measure func=BPRM_CHECK\n"}, 1, nil},
		{"inline without newline", "", map[string]string{Inline: "measure func=BPRM_CHECK"}, 1, nil},
		{"inline bad rule", dir, map[string]string{Inline: "measure func=NOPE\n"}, 0, errAny},
		{"inline empty", dir, map[string]string{Inline: ""}, 0, ErrNoRules},
		{"inline beyond rules limit", dir, map[string]string{Inline: strings.Repeat("measure func=BPRM_CHECK\n", 11)}, 0, policy.ErrNoSpace},
		{"file", dir, map[string]string{File: "exec"}, 2, nil},
		{"file via ConfigMap symlink", dir, map[string]string{File: "cm"}, 1, nil},
		{"file bad rule", dir, map[string]string{File: "bad"}, 0, errAny},
		{"file beyond rules limit", dir, map[string]string{File: "big"}, 0, policy.ErrNoSpace},
		{"file missing", dir, map[string]string{File: "nope"}, 0, os.ErrNotExist},
		{"file without dir", "", map[string]string{File: "exec"}, 0, ErrNoDir},
		{"file absolute path", dir, map[string]string{File: filepath.Join(outside, "secret")}, 0, ErrBadName},
		{"file dotdot", dir, map[string]string{File: "../secret"}, 0, ErrBadName},
		{"file hidden", dir, map[string]string{File: "..data"}, 0, ErrBadName},
		{"file symlink out", dir, map[string]string{File: "escape"}, 0, errAny},
		{"file directory", dir, map[string]string{File: "subdir"}, 0, errAny},
		{"both", dir, map[string]string{Inline: "measure func=BPRM_CHECK\n", File: "exec"}, 0, ErrBoth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules, from, err := Reader{Dir: tc.dir, Limits: small}.Policy(config(t, tc.ann))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr == errAny && err == nil, tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			case tc.wantErr != nil && rules != nil:
				t.Fatalf("rules %v with an error", rules)
			}
			if len(rules) != tc.rules {
				t.Errorf("%d rules, want %d", len(rules), tc.rules)
			}
			if (tc.rules > 0) != (from != "") {
				t.Errorf("from %q", from)
			}
			if err != nil && strings.Contains(err.Error(), "measure func") {
				t.Errorf("error carries the policy text: %v", err)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestPolicyBadConfig(t *testing.T) {
	if _, _, err := (Reader{}).Policy([]byte("{")); err == nil {
		t.Error("a config that is not JSON was accepted")
	}
	if r, _, err := (Reader{}).Policy(nil); r != nil || err != nil {
		t.Errorf("no config: %v, %v", r, err)
	}
}

func TestPolicyByteLimit(t *testing.T) {
	dir := t.TempDir()
	text := strings.Repeat("measure func=BPRM_CHECK\n", 5)
	os.WriteFile(filepath.Join(dir, "p"), []byte(text), 0o644)
	lim := policy.Limits{MaxRules: 100, MaxBytes: int64(len(text)) - 1}
	for _, ann := range []map[string]string{{Inline: text}, {File: "p"}} {
		if _, _, err := (Reader{Dir: dir, Limits: lim}).Policy(config(t, ann)); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%v: error %v, want ErrTooLarge", ann, err)
		}
	}
}
