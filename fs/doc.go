// Package fs is the FUSE tree imafs mounts in every container: a directory
// that looks like securityfs,
//
//	ima -> integrity/ima
//	integrity/ima/policy
//	integrity/ima/ascii_runtime_measurements -> ascii_runtime_measurements_sha1
//	integrity/ima/ascii_runtime_measurements_sha1, _sha256
//	integrity/ima/binary_runtime_measurements -> binary_runtime_measurements_sha1
//	integrity/ima/binary_runtime_measurements_sha1, _sha256
//	integrity/ima/runtime_measurements_count
//	integrity/ima/violations
//
// with the kernel's modes (0440, policy 0600) and owner root.
//
// The tree is the same for every caller, so the kernel may cache entries;
// content differs by caller, so it must never cache pages: every open
// answers FOPEN_DIRECT_IO, and the READs the kernel still sends for its page
// cache (sendfile and copy_file_range splice through it even on direct-I/O
// files) fail with EIO, which makes sendfile's users fall back to read(2).
// securityfs reports size 0; a FUSE file of size 0 would splice as empty, so
// content files report the caller's own content size instead, with
// attribute caching off. Each OPEN resolves the request's pid to
// the caller's imafs namespace (imans.Registry.ForCaller), checks privilege
// in the user namespace owning that container (the initial one for the host
// view: lists and counters uid 0, as the kernel's DAC; the policy and quote
// uid 0 with CAP_SYS_ADMIN) and binds the namespace to the file handle:
// later READ/WRITE/FLUSH/RELEASE requests (RELEASE comes with pid 0) are
// answered from the handle. The tree itself is immutable for every caller
// (immutable.go); list reads are bounded and shared per namespace (Fairness).
//
// The policy file follows the kernel's rules: O_RDWR is EACCES, one writer at
// a time per namespace (EBUSY), one rule per write() through a
// policy.Session, EINVAL for a bad rule (the session then changes nothing),
// read-back in canonical form. The kernel applies a session at release;
// FUSE sends RELEASE asynchronously, after close(2) has returned, so imafs
// applies what a handle has written at FLUSH (sent synchronously by every
// close) and makes RELEASE idempotent: `echo rule > policy; cat policy`
// sees the rule.
package fs
