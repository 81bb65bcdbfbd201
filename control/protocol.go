package control

import "github.com/imafs/imafs/vtpm"

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/imafs/imafs.sock"

// Operations.
const (
	OpPing      = "ping"
	OpAttach    = "attach"
	OpDetach    = "detach"
	OpPs        = "ps"
	OpLog       = "log"
	OpPolicyGet = "policy-get"
	OpPolicySet = "policy-set"
	OpMeasure   = "measure"
	// OpQuote asks for a container's vTPM attestation bundle (serve --vtpm):
	//	{"op":"quote","id":ID,"nonce":HEX} → {"ok":true,"bundle":{...}}
	OpQuote = "quote"
	// OpUpgrade hands the daemon over to a new process running the
	// daemon's executable (as found at its path now: an upgraded binary)
	// with the same arguments; the answer's Pid is the new daemon's.
	OpUpgrade = "upgrade"
)

// Request is one client request.
type Request struct {
	Op string `json:"op"`
	// ID is the container id (attach, detach, log, policy, measure); "host"
	// names the host namespace where that makes sense.
	ID  string `json:"id,omitempty"`
	Pid int    `json:"pid,omitempty"` // attach: host pid of the container's init
	// OCIConfig is the bundle's config.json (attach; measured as an ima-buf entry).
	OCIConfig []byte `json:"oci_config,omitempty"`
	// Target is where to mount inside the container's mount namespace
	// (attach; default /sys/kernel/security under the init's root).
	Target string `json:"target,omitempty"`
	// Rootfs is the host path of the container's root (attach from an OCI
	// hook): before pivot_root the mount goes to Rootfs+Target.
	Rootfs string `json:"rootfs,omitempty"`
	// Log: rendering ("ascii" or "binary"), bank ("sha1" default), follow.
	Format string `json:"format,omitempty"`
	Bank   string `json:"bank,omitempty"`
	Follow bool   `json:"follow,omitempty"`
	// Policy is the policy text to load (policy-set), kernel language.
	// A JSON string can't carry bytes that are not UTF-8 (they become
	// U+FFFD): a client sends PolicyBytes (base64 in JSON), which wins.
	Policy      string `json:"policy,omitempty"`
	PolicyBytes []byte `json:"policy_bytes,omitempty"`
	// Path is the absolute host path of the file to measure (measure).
	Path string `json:"path,omitempty"`
	// Name is the name to record for Path (measure; default Path).
	Name string `json:"name,omitempty"`
	// Func and Mask describe the hook for the policy match (measure;
	// default FILE_CHECK, MAY_READ).
	Func string `json:"func,omitempty"`
	Mask string `json:"mask,omitempty"`
	// Nonce is the verifier's nonce, hex (quote).
	Nonce string `json:"nonce,omitempty"`
}

// Response is the daemon's answer.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Code names the sentinel error the failure wraps (see CodeOf).
	Code       string          `json:"code,omitempty"`
	Stream     bool            `json:"stream,omitempty"`
	Namespace  *NamespaceInfo  `json:"namespace,omitempty"`
	Namespaces []NamespaceInfo `json:"namespaces,omitempty"`
	// Policy is the policy text (policy-get); PolicyBytes the same bytes
	// exactly (base64 in JSON), also where they are not UTF-8. A client
	// prints PolicyBytes when present (older daemons send only Policy).
	Policy      string `json:"policy,omitempty"`
	PolicyBytes []byte `json:"policy_bytes,omitempty"`
	Measured    bool   `json:"measured,omitempty"`
	// Bundle is the attestation bundle (quote), vtpm's documented format.
	Bundle *vtpm.Bundle `json:"bundle,omitempty"`
	// Pid is the new daemon's pid (upgrade).
	Pid int `json:"pid,omitempty"`
}

// NamespaceInfo describes one imafs namespace (imafs ps).
type NamespaceInfo struct {
	ID          string `json:"id"`
	Pid         int    `json:"pid"`
	Namespace   string `json:"namespace"` // "pid:[inode]" of the container's pid namespace
	Entries     int    `json:"entries"`
	Violations  int64  `json:"violations"`
	Rules       int    `json:"rules"`
	PCR10SHA1   string `json:"pcr10_sha1"`
	PCR10SHA256 string `json:"pcr10_sha256"`
	Mount       string `json:"mount,omitempty"`
	// Degraded says why the list is known incomplete (its journal was
	// found damaged: a <journal-damaged> violation entry marks the spot)
	// or why measurements fail right now (the state directory fails
	// writes); empty when neither.
	Degraded string `json:"degraded,omitempty"`
	// Sources says how each measurement source of the daemon runs, the
	// same for every row: "kernel" (ima-series or off), "fanotify"
	// (fanotify, off or unavailable), "mmap" (tracepoint, bpf-lsm, off or
	// unavailable: executable mappings are not measured).
	Sources map[string]string `json:"sources,omitempty"`
}
