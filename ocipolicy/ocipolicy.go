// Package ocipolicy reads the policy an orchestrator gives a container
// through its OCI config's annotations, so that a container whose root has
// no CAP_SYS_ADMIN (every default Docker, podman or Kubernetes container)
// starts measured without writing a policy itself:
//
//   - org.imafs.policy: the rules inline, in the kernel's policy language;
//   - org.imafs.policy-file: the name of a file in the operator's policy
//     directory (`imafs serve --policy-dir DIR`): a plain name, never a path,
//     resolved beneath DIR (symlinks that stay beneath it, as in a
//     Kubernetes ConfigMap volume, are followed).
//
// Both at once are refused. The text is parsed like a policy write and held
// to the same limits; any error fails the attach (fail-closed: a container
// that asked for a policy never runs without it). The daemon applies the
// rules as the container's first policy load: they replace the default
// policy, are saved like a load, and a later write by the container's root
// appends to them, as the kernel appends to a loaded custom policy.
package ocipolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/policy"
)

// The annotation keys.
const (
	Inline = "org.imafs.policy"
	File   = "org.imafs.policy-file"
)

// Errors of a refused annotation (wrapped).
var (
	ErrBoth      = errors.New("both " + Inline + " and " + File + " are set")
	ErrNoDir     = errors.New(File + " is set but the daemon has no --policy-dir")
	ErrBadName   = errors.New("not a plain file name")
	ErrTooLarge  = errors.New("policy larger than the policy limit")
	ErrNoRules   = errors.New("policy without rules")
	errBadConfig = errors.New("OCI config")
)

// Reader reads annotation policies.
type Reader struct {
	// Dir is the operator's policy directory; empty: File annotations
	// are refused.
	Dir string
	// Limits are the namespaces' policy limits (zero fields: defaults).
	Limits policy.Limits
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// Policy returns the rules config's annotations give (nil, nil without
// either annotation) and where they come from.
func (r Reader) Policy(config []byte) (policy.Policy, string, error) {
	if len(config) == 0 {
		return nil, "", nil
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(config, &spec); err != nil {
		return nil, "", fmt.Errorf("%w: %w", errBadConfig, err)
	}
	inline, hasInline := spec.Annotations[Inline]
	name, hasFile := spec.Annotations[File]
	var text, from string
	switch {
	case hasInline && hasFile:
		return nil, "", ErrBoth
	case hasInline:
		text, from = inline, "annotation "+Inline
	case hasFile:
		t, err := r.readFile(name)
		if err != nil {
			return nil, "", fmt.Errorf("annotation %s=%q: %w", File, name, err)
		}
		text, from = t, "annotation "+File+"="+name
	default:
		return nil, "", nil
	}
	limits := r.Limits.OrDefault()
	if int64(len(text)) > limits.MaxBytes {
		return nil, "", fmt.Errorf("%s: %d bytes: %w (%d)", from, len(text), ErrTooLarge, limits.MaxBytes)
	}
	parsed, err := policy.Parse(text)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", from, err)
	}
	rules := policy.Policy(parsed)
	if len(rules) == 0 {
		return nil, "", fmt.Errorf("%s: %w", from, ErrNoRules)
	}
	if !limits.Fits(len(rules), rules.Bytes()) {
		return nil, "", fmt.Errorf("%s: %d rules, %d bytes: %w", from, len(rules), rules.Bytes(), policy.ErrNoSpace)
	}
	return rules, from, nil
}

// readFile reads the file name beneath r.Dir, at most the byte limit.
func (r Reader) readFile(name string) (string, error) {
	if r.Dir == "" {
		return "", ErrNoDir
	}
	if !validName.MatchString(name) {
		return "", ErrBadName
	}
	dirfd, err := unix.Open(r.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("policy dir %s: %w", r.Dir, err)
	}
	defer unix.Close(dirfd)
	fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return "", fmt.Errorf("open in %s: %w", r.Dir, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file (%v)", name, err)
	}
	limit := r.Limits.OrDefault().MaxBytes
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return "", fmt.Errorf("%s: %w (%d)", name, ErrTooLarge, limit)
	}
	return string(data), nil
}
