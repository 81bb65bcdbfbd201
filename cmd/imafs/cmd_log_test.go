package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// golden returns a file of the kernel-produced lists kept in measurelog's testdata.
func golden(t *testing.T, dir, file string) string {
	t.Helper()
	return filepath.Join("..", "..", "measurelog", "testdata", "kernel-6.12", dir, file)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// pcrLine returns the "PCR-10: hex" line of an evmctl PCR file.
func pcrLine(t *testing.T, path string, pcr string) string {
	t.Helper()
	for _, l := range strings.Split(readFile(t, path), "\n") {
		if strings.HasPrefix(l, "PCR-"+pcr+": ") {
			return l + "\n"
		}
	}
	t.Fatalf("%s has no PCR-%s", path, pcr)
	return ""
}

func TestLogDecodeReplay(t *testing.T) {
	dir := t.TempDir()
	ng := readFile(t, golden(t, "ngsha256", "binary_runtime_measurements"))
	torn := filepath.Join(dir, "torn")
	if err := os.WriteFile(torn, []byte(ng[:1000]), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string // exact, when not empty
		stdoutHas  string
		stderrHas  string
		stdoutNone bool
	}{
		{name: "decode legacy file", args: []string{"decode", golden(t, "ngsha256", "binary_runtime_measurements")},
			stdout: readFile(t, golden(t, "ngsha256", "ascii_runtime_measurements"))},
		{name: "decode sha256 rendering", args: []string{"decode", "--bank", "sha256", golden(t, "legacy", "binary_runtime_measurements")},
			stdout: readFile(t, golden(t, "legacy", "ascii_runtime_measurements_sha256"))},
		{name: "decode a sha256 list (autodetected), flags after FILE", args: []string{"decode", golden(t, "ngv2", "binary_runtime_measurements_sha256"), "--format", "binary", "--bank", "sha256"},
			stdout: readFile(t, golden(t, "ngv2", "binary_runtime_measurements_sha256"))},
		{name: "decode a sha256 list to the sha1 binary file", args: []string{"decode", "--input-bank", "sha256", "--format", "binary", golden(t, "ngsha256", "binary_runtime_measurements_sha256")},
			stdout: readFile(t, golden(t, "ngsha256", "binary_runtime_measurements_sha1"))},
		{name: "wrong input bank", args: []string{"decode", "--input-bank", "sha256", golden(t, "ngsha256", "binary_runtime_measurements")},
			code: 1, stderrHas: "offset 0:", stdoutNone: true},
		{name: "replay sha1 (default)", args: []string{"replay", golden(t, "ngsha256", "binary_runtime_measurements_sha256")},
			stdout: pcrLine(t, golden(t, "ngsha256", "pcrs-sha1.txt"), "10")},
		{name: "replay sha256", args: []string{"replay", "--bank", "sha256", golden(t, "legacy", "binary_runtime_measurements")},
			stdout: pcrLine(t, golden(t, "legacy", "pcrs-sha256.txt"), "10")},
		{name: "replay --all", args: []string{"replay", "--all", golden(t, "ngv2", "binary_runtime_measurements")},
			stdoutHas: "PCR-09: 0000000000000000000000000000000000000000\n" + pcrLine(t, golden(t, "ngv2", "pcrs-sha1.txt"), "10") + "PCR-11: 0000000000000000000000000000000000000000\n"},
		{name: "torn list", args: []string{"decode", torn}, code: 1,
			stdoutHas: "/tmp/dir_with_spaces/my_script.sh\n", stderrHas: "offset 973: record 9 torn"},
		{name: "missing file", args: []string{"replay", filepath.Join(dir, "nope")}, code: 1, stderrHas: "no such file", stdoutNone: true},
		{name: "bad bank", args: []string{"decode", "--bank", "md5", torn}, code: 1, stderrHas: "--bank", stdoutNone: true},
		{name: "bad format", args: []string{"decode", "--format", "xml", torn}, code: 1, stderrHas: "--format", stdoutNone: true},
		{name: "no file", args: []string{"decode"}, code: 2, stderrHas: "exactly one FILE", stdoutNone: true},
		{name: "unknown flag", args: []string{"replay", "--frobnicate", torn}, code: 2, stdoutNone: true},
		{name: "help", args: []string{"--help"}, stdoutHas: "imafs log decode"},
		{name: "decode help", args: []string{"decode", "-h"}, stdoutHas: "--input-bank"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runLog(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if tc.stdout != "" && stdout.String() != tc.stdout {
				t.Errorf("stdout:\n%.400q\nwant:\n%.400q", stdout.String(), tc.stdout)
			}
			if !strings.Contains(stdout.String(), tc.stdoutHas) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdoutHas, stdout.String())
			}
			if !strings.Contains(stderr.String(), tc.stderrHas) {
				t.Errorf("stderr lacks %q: %s", tc.stderrHas, stderr.String())
			}
			if tc.stdoutNone && stdout.Len() != 0 {
				t.Errorf("stdout not empty: %.200q", stdout.String())
			}
		})
	}
}

func TestLogDelegatesToClient(t *testing.T) {
	saved := logClient
	defer func() { logClient = saved }()

	logClient = nil
	var stdout, stderr bytes.Buffer
	if code := runLog([]string{"c1"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "Usage") {
		t.Errorf("without a client: exit %d, stderr %q", code, stderr.String())
	}
	var got []string
	logClient = func(args []string) int { got = args; return 7 }
	if code := runLog([]string{"--host", "-f"}, &stdout, &stderr); code != 7 || strings.Join(got, " ") != "--host -f" {
		t.Errorf("client got %q, exit %d", got, code)
	}
}
