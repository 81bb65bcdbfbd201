package policy

import (
	"errors"
	"fmt"
)

// Action is a set of IMA rule actions.
type Action uint16

// Rule actions, one bit each.
const (
	Measure Action = 1 << iota
	DontMeasure
	Appraise
	DontAppraise
	Audit
	DontAudit
	Hash
	DontHash
)

// Func is the hook a rule applies to (func=).
type Func uint8

// Hooks, in the kernel's enum ima_hooks order.
const (
	FuncNone Func = iota
	BPRMCheck
	MMAPCheck
	MMAPCheckReqprot
	CredsCheck
	FileCheck
	ModuleCheck
	FirmwareCheck
	KexecKernelCheck
	KexecInitramfsCheck
	KexecCmdline
	PolicyCheck
	KeyCheck
	CriticalData
	SetxattrCheck
)

// String returns the kernel's name of the hook.
func (f Func) String() string { return fmt.Sprintf("Func(%d)", uint8(f)) }

// Mask is an access mask (mask=), with the kernel's MAY_* values.
type Mask uint8

// Kernel MAY_* values.
const (
	MayExec   Mask = 1
	MayWrite  Mask = 2
	MayRead   Mask = 4
	MayAppend Mask = 8
)

// Rule is one parsed policy rule.
type Rule struct {
	Action Action
}

var errNotImplemented = errors.New("policy: not implemented yet")

// ParseRule parses one rule; it returns nil, nil for blank and comment lines.
func ParseRule(line string) (*Rule, error) { return nil, errNotImplemented }

// Parse parses many lines; the first bad one gives a *ParseError and no rules.
func Parse(text string) ([]*Rule, error) { return nil, errNotImplemented }

// ParseError reports an invalid rule.
type ParseError struct {
	Line   int
	Token  string
	Reason string
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// String returns the kernel's read-back form of the rule, ending in " ".
func (r *Rule) String() string { return "" }

// Policy is an ordered list of rules.
type Policy []*Rule

// String returns every rule followed by "\n".
func (p Policy) String() string {
	s := ""
	for _, r := range p {
		s += r.String() + "\n"
	}
	return s
}

// BuiltIn returns one of the kernel's built-in policies.
func BuiltIn(name string) (Policy, error) { return nil, errNotImplemented }

// Event is what a hook saw.
type Event struct {
	Func           Func
	Mask           Mask
	FSMagic        uint64
	FSUUID         [16]byte
	FSName         string
	UID, EUID      uint32
	GID, EGID      uint32
	FOwner, FGroup uint32
	Keyring, Label string
}

// Decision is what applies to an event.
type Decision struct {
	Actions       Action
	PCR           int
	Template      string
	AppraiseType  string
	AppraiseAlgos []string
	DigestVerity  bool
}

// Match returns the decision for ev with the kernel's first-match semantics.
func (p Policy) Match(ev Event) Decision { return Decision{PCR: -1} }
