package policy

import (
	"bytes"
	"errors"
	"fmt"
)

// Errors of a policy write session. A Session's errors wrap one of these so
// a file system can map them to errno values with errors.Is.
var (
	// ErrInvalid: EINVAL (bad rule, write at a non-zero offset, bad policy file).
	ErrInvalid = errors.New("invalid argument")
	// ErrAccess: EACCES (a signed policy is required: only "/path" writes).
	ErrAccess = errors.New("permission denied")
	// ErrNoRules: Commit of a session that added no rule (comment-only, no
	// write at all). The writer's close still succeeds; nothing changes.
	ErrNoRules = errors.New("policy update failed: no rules")
	// ErrFailed: Commit of a session in which a write failed; the whole
	// session is discarded.
	ErrFailed = errors.New("policy update failed")
	// ErrCommitted: the session was already committed.
	ErrCommitted = errors.New("policy session already committed")
)

// PageSize is the kernel page size of the golden machine (x86-64); one
// write() is cut to PageSize-1 bytes.
const PageSize = 4096

// Session models one open(O_WRONLY)..close() of the kernel's policy file
// (ima_fs.c: ima_write_policy, ima_read_policy, ima_release_policy;
// ima_policy.c: ima_parse_add_rule). It is pure: it does no I/O except
// through ReadFile, and it is not safe for concurrent use (the kernel
// serialises writers; so must its user).
//
// Reproduced kernel behaviours, each checked against the golden kernel's
// policy-extra results (testdata/kernel-6.12/policy-extra):
//
//   - a write at a non-zero file position fails with EINVAL (no partial
//     writes; the kernel never advances the position, so every plain
//     write() arrives at position 0; see WriteSequential for FUSE);
//   - a write longer than PageSize-1 bytes is cut to PageSize-1 bytes;
//   - each write() consumes only its first line: the bytes up to and
//     including the first "\n" (or up to a NUL byte, where the kernel's
//     string ends); the return value is that line's length + 1, so a write
//     without a trailing newline returns count+1 (37 bytes → 38), and a
//     multi-line write returns the first line's length, after which the
//     writer (cat, dd...) writes the rest;
//   - blank lines and lines whose first non-blank character is '#' are
//     consumed and add nothing; "\r" is part of a line (a CRLF rule is
//     invalid);
//   - an invalid rule fails that write with EINVAL and marks the whole
//     session failed: Commit then returns ErrFailed and no rules, even for
//     rules accepted earlier in the session; a number kstrtoul overflows on
//     (uid=, fowner=, fsmagic= ...) fails it with ERANGE (ErrRange);
//   - (imafs's own) a rule beyond Room fails its write with ErrNoSpace
//     (ENOSPC), which also fails the session;
//   - a write whose data begins with '/' names a policy file to load
//     (ReadFile): its path ends at the first "\n"; the file's lines are
//     parsed as above; the write returns the whole data's length (up to a
//     NUL); a missing file, an invalid rule or a last line without "\n"
//     fails the write (ima_read_policy's size accounting) and the session;
//     an error names the file's line by number, never its content;
//   - with RequireSignedPolicy, any other write fails with EACCES;
//   - Commit (close) of a session that added no rule returns ErrNoRules:
//     the writer saw success, the policy does not change;
//   - LSM conditions are rejected while DefaultPolicyActive, else accepted
//     as inactive rules (see ParseOptions).
//
// Not modelled here (the file system does it): EBUSY for a second writer,
// EACCES for O_RDWR, who may open the file, appending the committed rules
// to (or, at the first load, replacing) the namespace's policy.
type Session struct {
	// Options for every rule of the session (DefaultPolicyActive etc.).
	Options ParseOptions
	// RequireSignedPolicy: the kernel's IMA_APPRAISE_POLICY is set (see
	// Policy.RequiresSignedPolicy): only "/path" writes are accepted.
	RequireSignedPolicy bool
	// ReadFile reads a policy file named by a "/path" write, as the writer
	// would see it. Nil: such writes fail with ErrInvalid.
	ReadFile func(path string) ([]byte, error)
	// Room, when set, is what the session may still add to the policy:
	// a rule beyond it fails its write (and so the session) with an error
	// wrapping ErrNoSpace, before the session grows any further.
	Room *Limits

	bytes     int64 // RuleBytes of rules
	rules     Policy
	failed    error // first failure, sticky
	lines     int   // lines written, for error positions
	consumed  int64 // bytes acknowledged to the writer (for WriteSequential)
	committed bool
}

// Write handles one write(2) of p at file position off with the kernel's
// semantics; it returns the kernel's byte count (which may exceed len(p) by
// one, see Session) or an error wrapping ErrInvalid or ErrAccess (and a
// *ParseError for a bad rule, or ReadFile's error).
func (s *Session) Write(p []byte, off int64) (int, error) {
	if s.committed {
		return 0, ErrCommitted
	}
	n, err := s.write(p, off)
	if err != nil {
		if s.failed == nil {
			s.failed = err
		}
		return 0, err
	}
	return n, nil
}

// WriteSequential is Write for a server whose file position advances by the
// count it returns (FUSE): off is that position. A write at off equal to
// the bytes acknowledged so far is the kernel's write at position 0; any
// other off is a non-zero position (EINVAL). The count is capped at len(p),
// since a FUSE server may not acknowledge more than it was given.
func (s *Session) WriteSequential(p []byte, off int64) (int, error) {
	kpos := off - s.consumed
	n, err := s.Write(p, kpos)
	if err != nil {
		return 0, err
	}
	if n > len(p) {
		n = len(p)
	}
	s.consumed += int64(n)
	return n, nil
}

func (s *Session) write(p []byte, off int64) (int, error) {
	if len(p) >= PageSize {
		p = p[:PageSize-1]
	}
	if off != 0 {
		return 0, fmt.Errorf("policy write at offset %d: %w (no partial writes)", off, ErrInvalid)
	}
	if i := bytes.IndexByte(p, 0); i >= 0 { // memdup_user_nul: the string ends here
		p = p[:i]
	}
	if len(p) > 0 && p[0] == '/' {
		return s.load(p)
	}
	if s.RequireSignedPolicy {
		return 0, fmt.Errorf("policy write: %w: a signed policy file (an absolute path) is required", ErrAccess)
	}
	line := p
	if i := bytes.IndexByte(p, '\n'); i >= 0 {
		line = p[:i]
	}
	s.lines++
	if err := s.addLine(line, s.lines); err != nil {
		return 0, err
	}
	return len(line) + 1, nil
}

// addLine parses one line (lineNo: its number in the session or the loaded
// file) and keeps its rule.
func (s *Session) addLine(line []byte, lineNo int) error {
	r, err := parseLine(string(line), lineNo, &s.Options)
	if err != nil {
		return fmt.Errorf("policy write: %w: %w", ErrInvalid, err)
	}
	if r == nil {
		return nil
	}
	n := RuleBytes(r)
	if s.Room != nil && !s.Room.Fits(len(s.rules)+1, s.bytes+n) {
		return fmt.Errorf("policy write: %w: the limits leave room for %d more rules, %d more bytes", ErrNoSpace, s.Room.MaxRules, s.Room.MaxBytes)
	}
	s.rules = append(s.rules, r)
	s.bytes += n
	return nil
}

// loadErr is the error of line lineNo of a loaded policy file: it names the
// line, never its content (the file is the writer's to read, not the
// daemon log's: a host file's line must not end up there).
func loadErr(path []byte, lineNo int, err error) error {
	var pe *ParseError
	if !errors.As(err, &pe) {
		return fmt.Errorf("policy load %q: line %d: %w", path, lineNo, err)
	}
	if pe.Err != nil {
		return fmt.Errorf("policy load %q: line %d: invalid rule: %w: %w", path, lineNo, ErrInvalid, pe.Err)
	}
	return fmt.Errorf("policy load %q: line %d: invalid rule: %w", path, lineNo, ErrInvalid)
}

// load mirrors ima_read_policy.
func (s *Session) load(data []byte) (int, error) {
	path := data
	if i := bytes.IndexByte(path, '\n'); i >= 0 {
		path = path[:i]
	}
	if s.ReadFile == nil {
		return 0, fmt.Errorf("policy load %q: %w: loading a policy file is not supported here", path, ErrInvalid)
	}
	content, err := s.ReadFile(string(path))
	if err != nil {
		return 0, fmt.Errorf("policy load %q: %w", path, err)
	}
	rest := content
	lineNo := 0
	for len(rest) > 0 {
		lineNo++
		line := rest
		end := bytes.IndexAny(rest, "\n\x00")
		if end < 0 {
			// The kernel's size accounting (strlen+1 per line) underflows
			// on a last line without "\n": the load fails with EINVAL.
			if err := s.addLine(line, lineNo); err != nil {
				return 0, loadErr(path, lineNo, err)
			}
			return 0, fmt.Errorf("policy load %q: %w: last line has no newline", path, ErrInvalid)
		}
		line = rest[:end]
		if err := s.addLine(line, lineNo); err != nil {
			return 0, loadErr(path, lineNo, err)
		}
		if rest[end] == 0 {
			// strsep stops at the NUL: the bytes after it are never
			// parsed and the size check fails.
			return 0, fmt.Errorf("policy load %q: %w: NUL byte in policy file", path, ErrInvalid)
		}
		rest = rest[end+1:]
	}
	return len(data), nil
}

// Rules returns the rules parsed so far (not yet committed).
func (s *Session) Rules() Policy { return s.rules }

// Failed returns the first error of the session, or nil.
func (s *Session) Failed() error { return s.failed }

// Commit ends the session like ima_release_policy: it returns the rules to
// add to the policy, or an error wrapping ErrFailed (a write failed) or
// ErrNoRules (nothing to add); in both cases the policy must not change.
func (s *Session) Commit() (Policy, error) {
	if s.committed {
		return nil, ErrCommitted
	}
	s.committed = true
	if s.failed != nil {
		return nil, fmt.Errorf("%w: %w", ErrFailed, s.failed)
	}
	if len(s.rules) == 0 {
		return nil, ErrNoRules
	}
	return s.rules, nil
}
