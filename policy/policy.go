package policy

import (
	"strings"
)

// Action is a set of IMA rule actions. A parsed rule has exactly one; a
// Decision may hold several.
//
// The bits come in pairs (X, DontX == X<<1), like the kernel's, which is
// what lets Match clear a whole action kind once it is decided.
type Action uint16

// Rule actions, one bit each.
const (
	Measure Action = 1 << iota
	DontMeasure
	Appraise
	DontAppraise
	Audit
	DontAudit // not a policy keyword in Linux 6.12; never produced by the parser
	Hash
	DontHash
)

// doMask is the set of positive actions (the kernel's IMA_DO_MASK).
const doMask = Measure | Appraise | Audit | Hash

var actionNames = [...]struct {
	a    Action
	name string
}{
	{Measure, "measure"},
	{DontMeasure, "dont_measure"},
	{Appraise, "appraise"},
	{DontAppraise, "dont_appraise"},
	{Audit, "audit"},
	{DontAudit, "dont_audit"},
	{Hash, "hash"},
	{DontHash, "dont_hash"},
}

// String returns the policy keywords of the actions in a, joined by "|"
// ("measure", "dont_appraise", "measure|appraise").
func (a Action) String() string {
	if a == 0 {
		return "none"
	}
	var parts []string
	for _, n := range actionNames {
		if a&n.a != 0 {
			parts = append(parts, n.name)
		}
	}
	return strings.Join(parts, "|")
}

// Func is the hook a rule applies to (func=). Its numeric values are this
// package's own (API order), not the kernel's enum ima_hooks; String returns
// the kernel's names.
type Func uint8

// Hooks.
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
	// PostSetattr is the kernel's POST_SETATTR hook: it cannot be named in a
	// policy, but an event may carry it, and then every file rule whose other
	// conditions hold matches whatever its func= and mask= (ima_match_rules).
	PostSetattr
	numFuncs
)

var funcNames = [numFuncs]string{
	FuncNone:            "NONE",
	BPRMCheck:           "BPRM_CHECK",
	MMAPCheck:           "MMAP_CHECK",
	MMAPCheckReqprot:    "MMAP_CHECK_REQPROT",
	CredsCheck:          "CREDS_CHECK",
	FileCheck:           "FILE_CHECK",
	ModuleCheck:         "MODULE_CHECK",
	FirmwareCheck:       "FIRMWARE_CHECK",
	KexecKernelCheck:    "KEXEC_KERNEL_CHECK",
	KexecInitramfsCheck: "KEXEC_INITRAMFS_CHECK",
	KexecCmdline:        "KEXEC_CMDLINE",
	PolicyCheck:         "POLICY_CHECK",
	KeyCheck:            "KEY_CHECK",
	CriticalData:        "CRITICAL_DATA",
	SetxattrCheck:       "SETXATTR_CHECK",
	PostSetattr:         "POST_SETATTR",
}

// String returns the kernel's name of the hook ("BPRM_CHECK").
func (f Func) String() string {
	if f < numFuncs {
		return funcNames[f]
	}
	return "Func(" + itoa(int64(f)) + ")"
}

// ParseFunc returns the hook a policy names with func=, folding the
// kernel's aliases (FILE_MMAP → MMAP_CHECK, PATH_CHECK → FILE_CHECK).
func ParseFunc(name string) (Func, bool) {
	switch name {
	case "FILE_CHECK", "PATH_CHECK":
		return FileCheck, true
	case "MODULE_CHECK":
		return ModuleCheck, true
	case "FIRMWARE_CHECK":
		return FirmwareCheck, true
	case "FILE_MMAP", "MMAP_CHECK":
		return MMAPCheck, true
	case "MMAP_CHECK_REQPROT":
		return MMAPCheckReqprot, true
	case "BPRM_CHECK":
		return BPRMCheck, true
	case "CREDS_CHECK":
		return CredsCheck, true
	case "KEXEC_KERNEL_CHECK":
		return KexecKernelCheck, true
	case "KEXEC_INITRAMFS_CHECK":
		return KexecInitramfsCheck, true
	case "POLICY_CHECK":
		return PolicyCheck, true
	case "KEXEC_CMDLINE":
		return KexecCmdline, true
	case "KEY_CHECK": // CONFIG_IMA_MEASURE_ASYMMETRIC_KEYS=y
		return KeyCheck, true
	case "CRITICAL_DATA":
		return CriticalData, true
	case "SETXATTR_CHECK":
		return SetxattrCheck, true
	}
	return FuncNone, false
}

// Mask is an access mask (mask=), with the kernel's MAY_* values.
type Mask uint8

// Kernel MAY_* values.
const (
	MayExec   Mask = 1
	MayWrite  Mask = 2
	MayRead   Mask = 4
	MayAppend Mask = 8
)

// String returns the kernel's names of the bits in m joined by "|".
func (m Mask) String() string {
	var parts []string
	for _, n := range maskNames {
		if m&n.m != 0 {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, "|")
}

// ParseMask returns the access a policy names with mask= (MAY_EXEC,
// MAY_WRITE, MAY_READ, MAY_APPEND; without the ^ prefix).
func ParseMask(name string) (Mask, bool) {
	for _, n := range maskNames {
		if n.name == name {
			return n.m, true
		}
	}
	return 0, false
}

var maskNames = [...]struct {
	m    Mask
	name string
}{
	{MayExec, "MAY_EXEC"},
	{MayWrite, "MAY_WRITE"},
	{MayRead, "MAY_READ"},
	{MayAppend, "MAY_APPEND"},
}

// CmpOp is the comparison of an id condition: uid=, uid>, uid<.
type CmpOp uint8

// Comparisons. OpNone means the condition is absent.
const (
	OpNone CmpOp = iota
	OpEqual
	OpGreater
	OpLess
)

// String returns "=", ">" or "<" ("" for OpNone).
func (o CmpOp) String() string {
	switch o {
	case OpEqual:
		return "="
	case OpGreater:
		return ">"
	case OpLess:
		return "<"
	}
	return ""
}

// IDCond is a uid/euid/gid/egid/fowner/fgroup condition.
type IDCond struct {
	Op CmpOp // OpNone: no condition
	ID uint32
}

// Set reports whether the condition is present.
func (c IDCond) Set() bool { return c.Op != OpNone }

// Holds reports whether id satisfies the condition (true when absent).
func (c IDCond) Holds(id uint32) bool {
	switch c.Op {
	case OpEqual:
		return id == c.ID
	case OpGreater:
		return id > c.ID
	case OpLess:
		return id < c.ID
	}
	return true
}

// LSMField indexes Rule.LSM: the obj_*/subj_* conditions.
type LSMField int

// LSM conditions, in the kernel's order.
const (
	ObjUser LSMField = iota
	ObjRole
	ObjType
	SubjUser
	SubjRole
	SubjType
	numLSM
)

var lsmNames = [numLSM]string{"obj_user", "obj_role", "obj_type", "subj_user", "subj_role", "subj_type"}

// String returns the policy keyword ("obj_type").
func (f LSMField) String() string {
	if f >= 0 && f < numLSM {
		return lsmNames[f]
	}
	return "LSMField(" + itoa(int64(f)) + ")"
}

// Rule is one policy rule. The zero value of every condition means "absent".
//
// A rule built by hand should be checked with Validate before use; rules from
// the parser and from BuiltIn are valid.
type Rule struct {
	// Action is the rule's one action.
	Action Action

	// Conditions.
	Func Func // FuncNone: every hook (except KEY_CHECK and CRITICAL_DATA)
	Mask Mask // 0: any access
	// MaskIncludes selects mask=^MAY_X (kernel IMA_INMASK): the access must
	// include the bit, instead of being exactly it.
	MaskIncludes bool
	FSMagic      uint64
	HasFSMagic   bool // fsmagic=0 is a valid condition
	FSUUID       [16]byte
	HasFSUUID    bool
	FSName       string // "": any
	UID          IDCond // the task's uid
	EUID         IDCond // the task's euid (also suid/uid with CAP_SETUID)
	GID          IDCond
	EGID         IDCond
	FOwner       IDCond // the inode's owner
	FGroup       IDCond
	Keyrings     []string // func=KEY_CHECK only; nil: any keyring
	Label        []string // func=CRITICAL_DATA only; nil: any label
	// LSM holds obj_*/subj_* values. The kernel this package mirrors has no
	// LSM rule support (no CONFIG_IMA_LSM_RULES), so a rule with any of them
	// is "inactive": it never matches and the kernel's read-back omits the
	// whole rule (see Rule.Active).
	LSM [numLSM]string

	// Options.
	PCR            int  // pcr=, with HasPCR
	HasPCR         bool //
	Template       string
	AppraiseAlgos  []string // appraise_algos=, in the kernel's hash_algo order
	DigSigRequired bool     // appraise_type=imasig (or sigv3, imasig|modsig)
	ModSigAllowed  bool     // appraise_type=imasig|modsig
	VerityRequired bool     // digest_type=verity (with DigSigRequired: sigv3)
	PermitDirectIO bool     // permit_directio
}

// Active reports whether the rule takes part in matching and in the
// kernel's read-back: false when it has an LSM condition (this kernel
// configuration has no LSM rules, so the kernel keeps such a rule but never
// matches or prints it).
func (r *Rule) Active() bool {
	for _, v := range r.LSM {
		if v != "" {
			return false
		}
	}
	return true
}

// Policy is an ordered list of rules.
type Policy []*Rule

// String returns the policy exactly as the kernel's policy file reads it
// back: each active rule's String followed by "\n"; inactive rules (see
// Rule.Active) are left out like the kernel leaves them out.
func (p Policy) String() string {
	var b []byte
	for _, r := range p {
		if !r.Active() {
			continue
		}
		b = r.AppendText(b)
		b = append(b, '\n')
	}
	return string(b)
}

// RequiresSignedPolicy reports whether the policy has an
// "appraise func=POLICY_CHECK" rule: the kernel then sets
// IMA_APPRAISE_POLICY and refuses rules written directly (EACCES), accepting
// only a "/path" of a signed policy file. See Session.RequireSignedPolicy.
func (p Policy) RequiresSignedPolicy() bool {
	for _, r := range p {
		if r.Action == Appraise && r.Func == PolicyCheck {
			return true
		}
	}
	return false
}

func itoa(v int64) string {
	var buf [24]byte
	return string(appendInt(buf[:0], v))
}
