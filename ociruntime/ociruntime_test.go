package ociruntime

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommand(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		cmd, bundle string
	}{
		{[]string{"--root", "/run/x", "--log", "/l", "--log-format", "json", "create", "--bundle", "/b", "id"}, "create", "/b"},
		{[]string{"--systemd-cgroup", "create", "-b", "/b2", "--pid-file", "/p", "id"}, "create", "/b2"},
		{[]string{"create", "--bundle=/b3", "id"}, "create", "/b3"},
		{[]string{"create", "id"}, "create", "/cwd"},
		{[]string{"create", "--bundle", "rel", "id"}, "create", "/cwd/rel"},
		{[]string{"run", "-d", "-b", "/b4", "id"}, "run", "/b4"},
		{[]string{"--root", "/run/x", "start", "id"}, "start", ""},
		{[]string{"--root", "create", "delete", "id"}, "delete", ""}, // "create" is --root's value
		{[]string{"--version"}, "", ""},
		{nil, "", ""},
	} {
		cmd, bundle := Command(tc.args, "/cwd")
		if cmd != tc.cmd || bundle != tc.bundle {
			t.Errorf("Command(%q) = %q, %q; want %q, %q", tc.args, cmd, bundle, tc.cmd, tc.bundle)
		}
	}
}

func TestAddHooks(t *testing.T) {
	dir := t.TempDir()
	cfg := `{"ociVersion":"1.0.2","process":{"user":{"uid":4294967294,"gid":0}},` +
		`"hooks":{"poststop":[{"path":"/other","args":["other"]}]},"annotations":{"a":"b"}}`
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	hooks := map[string][]Hook{
		"createRuntime": {{Path: "/imafs", Args: []string{"imafs", "oci-hook", "createRuntime"}}},
		"poststop":      {{Path: "/imafs", Args: []string{"imafs", "oci-hook", "poststop"}}},
	}
	for i := 0; i < 2; i++ { // the second call adds nothing
		if err := AddHooks(dir, hooks); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"uid":4294967294`) || !strings.Contains(string(data), `"annotations":{"a":"b"}`) {
		t.Errorf("fields changed: %s", data)
	}
	var spec struct {
		Hooks map[string][]Hook `json:"hooks"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	if got := spec.Hooks["poststop"]; len(got) != 2 || got[0].Path != "/other" || got[1].Args[2] != "poststop" {
		t.Errorf("poststop hooks %+v", got)
	}
	if got := spec.Hooks["createRuntime"]; len(got) != 1 || got[0].Args[2] != "createRuntime" {
		t.Errorf("createRuntime hooks %+v", got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if err := AddHooks(filepath.Join(dir, "nope"), hooks); err == nil {
		t.Error("a missing bundle was accepted")
	}
}
