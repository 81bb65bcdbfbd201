// Package ociruntime is the heart of `imafs runtime`, an OCI runtime that
// wraps runc the way GPU runtimes do: at `create` (and `run`) it adds imafs's
// hooks to the bundle's config.json (createRuntime: attach, poststop:
// detach) and then runs runc with the original arguments. An engine that
// reads no hooks.d directory (Docker, containerd without NRI) gets imafs by
// naming this runtime (Docker: a "runtimes" entry in daemon.json).
//
// The edit keeps every field of the config (numbers exactly: decoded as
// json.Number) and is idempotent: a hook whose path and args are already
// there is not added again. The oci-config entry imafs measures at attach is
// the config as edited.
package ociruntime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Hook is an OCI hook.
type Hook struct {
	Path    string   `json:"path"`
	Args    []string `json:"args,omitempty"`
	Env     []string `json:"env,omitempty"`
	Timeout int      `json:"timeout,omitempty"`
}

// runcValueFlags are runc's global flags that take a value (runc 1.1).
var runcValueFlags = map[string]bool{
	"--log": true, "--log-format": true, "--root": true, "--criu": true, "--rootless": true,
}

// Command returns runc's subcommand in args (runc's global flags first) and
// the bundle directory of create and run (--bundle/-b, default: dir, the
// runtime's working directory); bundle is empty for other commands.
func Command(args []string, dir string) (cmd, bundle string) {
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			break
		}
		if runcValueFlags[a] {
			i++ // its value
		}
	}
	if i >= len(args) {
		return "", ""
	}
	cmd = args[i]
	if cmd != "create" && cmd != "run" {
		return cmd, ""
	}
	bundle = dir
	for j := i + 1; j < len(args); j++ {
		a := args[j]
		switch {
		case a == "--":
			return cmd, bundle
		case (a == "--bundle" || a == "-b" || a == "-bundle") && j+1 < len(args):
			bundle = args[j+1]
			j++
		case strings.HasPrefix(a, "--bundle="), strings.HasPrefix(a, "-b="):
			bundle = a[strings.IndexByte(a, '=')+1:]
		}
	}
	if !filepath.IsAbs(bundle) {
		bundle = filepath.Join(dir, bundle)
	}
	return cmd, bundle
}

// AddHooks adds hooks (by OCI hook name) to bundle/config.json, after
// those already there, skipping one with the same path and args.
func AddHooks(bundle string, hooks map[string][]Hook) error {
	path := filepath.Join(bundle, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("add hooks: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var spec map[string]any
	if err := dec.Decode(&spec); err != nil {
		return fmt.Errorf("add hooks: %s: %w", path, err)
	}
	all, _ := spec["hooks"].(map[string]any)
	if all == nil {
		all = map[string]any{}
	}
	for stage, add := range hooks {
		have, _ := all[stage].([]any)
		for _, h := range add {
			if !contains(have, h) {
				have = append(have, h)
			}
		}
		all[stage] = have
	}
	spec["hooks"] = all
	out, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("add hooks: %w", err)
	}
	return replaceFile(path, out)
}

// contains reports whether have holds a hook with h's path and args.
func contains(have []any, h Hook) bool {
	for _, x := range have {
		m, _ := x.(map[string]any)
		if m == nil || m["path"] != h.Path {
			continue
		}
		args, _ := m["args"].([]any)
		if len(args) != len(h.Args) {
			continue
		}
		same := true
		for i := range args {
			same = same && args[i] == h.Args[i]
		}
		if same {
			return true
		}
	}
	return false
}

// replaceFile writes data to path through a temporary file and a rename,
// keeping path's mode.
func replaceFile(path string, data []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("add hooks: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config.json.imafs-*")
	if err != nil {
		return fmt.Errorf("add hooks: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("add hooks: %w", err)
	}
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return fmt.Errorf("add hooks: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("add hooks: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("add hooks: %w", err)
	}
	return nil
}
