package policy

import "errors"

// ErrNoSpace is wrapped by the error of a load that would take a
// namespace's policy beyond its Limits (the file system answers ENOSPC).
var ErrNoSpace = errors.New("policy limit reached")

// ErrRange is wrapped by the error of a rule with a number the kernel's
// kstrtoul rejects as out of range (uid=, fowner=, fsmagic= ...): ERANGE.
var ErrRange = errors.New("numerical result out of range")

// Default limits of one namespace's policy: far above real policies (a
// distribution's largest has a few hundred rules), far below what would
// let one container grow the daemon without bound.
const (
	DefaultMaxRules       = 10000
	DefaultMaxBytes int64 = 4 << 20
)

// Limits bound one namespace's policy: how many rules it may hold and how
// many bytes their read-back text (RuleBytes each) may take.
type Limits struct {
	MaxRules int
	MaxBytes int64
}

// DefaultLimits returns DefaultMaxRules and DefaultMaxBytes.
func DefaultLimits() Limits { return Limits{MaxRules: DefaultMaxRules, MaxBytes: DefaultMaxBytes} }

// OrDefault returns l with each zero field replaced by its default.
func (l Limits) OrDefault() Limits {
	if l.MaxRules == 0 {
		l.MaxRules = DefaultMaxRules
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// Fits reports whether a policy of rules rules and bytes bytes is within l.
func (l Limits) Fits(rules int, bytes int64) bool {
	return rules <= l.MaxRules && bytes <= l.MaxBytes
}

// RuleBytes is what one rule counts against Limits.MaxBytes: its read-back
// line with the newline (also for an inactive rule, which takes memory
// although the kernel does not show it).
func RuleBytes(r *Rule) int64 {
	var buf [256]byte
	return int64(len(r.AppendText(buf[:0]))) + 1
}

// Bytes returns the sum of RuleBytes over p.
func (p Policy) Bytes() int64 {
	var n int64
	for _, r := range p {
		n += RuleBytes(r)
	}
	return n
}
