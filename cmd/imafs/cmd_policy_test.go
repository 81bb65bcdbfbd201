package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyFmt(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantOut    string
		wantErr    string // substring of stderr
		wantStatus int
	}{
		{
			name:    "aliases folded, comments and blanks dropped",
			in:      "# my policy\n\nmeasure func=FILE_MMAP mask=MAY_EXEC\n  dont_measure   fsmagic=01021994\nmeasure func=PATH_CHECK mask=^MAY_READ euid=0\n",
			wantOut: "measure func=MMAP_CHECK mask=MAY_EXEC \ndont_measure fsmagic=0x1021994 \nmeasure func=FILE_CHECK mask=^MAY_READ euid=0 \n",
		},
		{
			name:    "kernel token order",
			in:      "measure func=FILE_CHECK mask=MAY_READ fsname=ext4 fowner>999 fgroup<100 pcr=12 template=ima-sig permit_directio",
			wantOut: "measure func=FILE_CHECK mask=MAY_READ fsname=ext4 pcr=12 fowner>999 fgroup<100 template=ima-sig permit_directio \n",
		},
		{
			name:       "first invalid rule",
			in:         "measure func=BPRM_CHECK\n# ok\nmeasure func=BOGUS\nmeasure uid=abc\n",
			wantErr:    "line 3: \"func=BOGUS\": unknown func \"BOGUS\"\n",
			wantStatus: 1,
		},
		{
			name:       "uid and euid share a field",
			in:         "measure uid=0 euid=0\n",
			wantErr:    "line 1: \"euid=0\": repeated uid/euid condition",
			wantStatus: 1,
		},
		{
			name:       "CRLF is invalid",
			in:         "measure func=BPRM_CHECK\r\n",
			wantErr:    "line 1: ",
			wantStatus: 1,
		},
		{
			name:    "inactive LSM rule is noted, not printed",
			in:      "measure obj_type=foo_t\nmeasure\n",
			wantOut: "measure \n",
			wantErr: "line 1: note:",
		},
		{
			name:    "empty input",
			in:      "",
			wantOut: "",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			status := runPolicy([]string{"fmt"}, strings.NewReader(tc.in), &out, &errb)
			if status != tc.wantStatus {
				t.Errorf("status %d, want %d (stderr %q)", status, tc.wantStatus, errb.String())
			}
			if out.String() != tc.wantOut {
				t.Errorf("stdout %q, want %q", out.String(), tc.wantOut)
			}
			if tc.wantErr == "" && errb.Len() > 0 || !strings.Contains(errb.String(), tc.wantErr) {
				t.Errorf("stderr %q, want it to contain %q", errb.String(), tc.wantErr)
			}
		})
	}
}

func TestPolicyClientDispatch(t *testing.T) {
	saved := policyClient
	defer func() { policyClient = saved }()

	var out, errb bytes.Buffer
	policyClient = nil
	if st := runPolicy([]string{"c1", "--set", "x"}, nil, &out, &errb); st != 2 || !strings.Contains(errb.String(), "Usage") {
		t.Errorf("nil client: status %d stderr %q", st, errb.String())
	}
	var got []string
	policyClient = func(args []string) int { got = args; return 7 }
	if st := runPolicy([]string{"c1", "--set", "x"}, nil, &out, &errb); st != 7 || strings.Join(got, " ") != "c1 --set x" {
		t.Errorf("client: status %d args %q", st, got)
	}
}

// TestPolicyCLIHelperProcess runs the real dispatcher when re-executed by
// TestPolicyFmtBinary; otherwise it does nothing.
func TestPolicyCLIHelperProcess(t *testing.T) {
	if os.Getenv("IMAFS_POLICY_CLI_HELPER") != "1" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(dispatch(args))
}

// TestPolicyFmtBinary runs "imafs policy fmt" as a process: real stdin,
// stdout, stderr and exit status, with a file argument and with stdin.
func TestPolicyFmtBinary(t *testing.T) {
	tcb, err := os.ReadFile("../../policy/testdata/kernel-6.12/policy-extra/policy-tcb-readback")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "tcb")
	if err := os.WriteFile(file, tcb, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(stdin string, args ...string) (string, string, int) {
		cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestPolicyCLIHelperProcess$", "--"}, args...)...)
		cmd.Env = append(os.Environ(), "IMAFS_POLICY_CLI_HELPER=1")
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		status := 0
		if ee, ok := err.(*exec.ExitError); ok {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), status
	}
	// The kernel's own read-back is a fixed point.
	if out, errs, st := run("", "policy", "fmt", file); st != 0 || out != string(tcb) {
		t.Errorf("fmt FILE: status %d stderr %q\n got %q\nwant %q", st, errs, out, tcb)
	}
	if out, errs, st := run("measure func=FILE_MMAP\n", "policy", "fmt"); st != 0 || out != "measure func=MMAP_CHECK \n" {
		t.Errorf("fmt stdin: status %d out %q stderr %q", st, out, errs)
	}
	if out, errs, st := run("measure\nappraise func=BPRM_CHECK template=ima-ng\n", "policy", "fmt", "-"); st != 1 || out != "" ||
		!strings.HasPrefix(errs, "line 2: ") {
		t.Errorf("fmt invalid: status %d out %q stderr %q", st, out, errs)
	}
	if _, errs, st := run("", "policy", "fmt", filepath.Join(t.TempDir(), "missing")); st != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("fmt missing file: status %d stderr %q", st, errs)
	}
}
