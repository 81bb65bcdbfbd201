package policy

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
)

// ParseError reports an invalid rule: where, which token, and why.
type ParseError struct {
	Line   int    // 1-based line number in the text (or write session)
	Token  string // the offending token as written, "" when the rule as a whole is at fault
	Reason string // human-readable reason
	// Err is ErrRange when the kernel answers ERANGE rather than EINVAL (a
	// kstrtoul overflow in uid=, fowner=, fsmagic= ...), else nil.
	Err error
}

// Error returns "line N: <reason>".
func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// Unwrap returns Err (ErrRange or nil).
func (e *ParseError) Unwrap() error { return e.Err }

// ParseOptions selects the kernel configuration and state a rule is parsed
// against. The zero value mirrors the golden Linux 6.12 kernel
// (testdata/kernel-6.12/kernel-config-6.12) after a custom policy was loaded.
type ParseOptions struct {
	// DefaultPolicyActive reports that no custom policy has been loaded yet
	// (the boot-time/built-in policy is in force). The kernel then rejects
	// a rule with an LSM condition no LSM can resolve (ima_lsm_rule_init:
	// "rule for LSM ... is undefined" → EINVAL); once a custom policy is
	// loaded, it accepts such a rule as an inactive one.
	DefaultPolicyActive bool
	// ModSig enables appraise_type=imasig|modsig (CONFIG_IMA_APPRAISE_MODSIG;
	// off in the golden kernel).
	ModSig bool
	// HashAlgos lists the algorithms appraise_algos= may name (the kernel:
	// those crypto_has_alg finds). Nil means DefaultHashAlgos.
	HashAlgos []string
}

// HashAlgoNames is the kernel's hash_algo_name table, in its index order
// (the order appraise_algos= prints in).
var HashAlgoNames = [...]string{
	"md4", "md5", "sha1", "rmd160", "sha256", "sha384", "sha512", "sha224",
	"rmd128", "rmd256", "rmd320", "wp256", "wp384", "wp512", "tgr128",
	"tgr160", "tgr192", "sm3", "streebog256", "streebog512", "sha3-256",
	"sha3-384", "sha3-512",
}

// DefaultHashAlgos are the appraise_algos= algorithms accepted by default:
// those Go's standard library implements (imafs hashes files itself).
var DefaultHashAlgos = []string{"md5", "sha1", "sha256", "sha384", "sha512", "sha224", "sha3-256", "sha3-384", "sha3-512"}

// Kernel612HashAlgos are the algorithms the golden 6.12 kernel has
// (CONFIG_CRYPTO_SHA1, CONFIG_CRYPTO_SHA256 which also provides sha224).
var Kernel612HashAlgos = []string{"sha1", "sha256", "sha224"}

// Template describes a template a rule may name with template=: the kernel's
// built-in ones, imafs's own namespace-tagged "ima-ns" and the imafs kernel
// series' "ima-nsreg" (the same fields; docs/file-semantics.md#templates).
type Template struct {
	Name string // "ima-ng"
	Fmt  string // "d-ng|n-ng"
}

// Templates is the kernel's builtin_templates table (lookup_template_desc
// matches a name or a format string) plus imafs's ima-ns and the series'
// ima-nsreg. ima-ns comes first: the format d-ng|n-ng|ns names it, as it
// did before the series' template was renamed.
var Templates = []Template{
	{"ima", "d|n"},
	{"ima-ng", "d-ng|n-ng"},
	{"ima-sig", "d-ng|n-ng|sig"},
	{"ima-ngv2", "d-ngv2|n-ng"},
	{"ima-sigv2", "d-ngv2|n-ng|sig"},
	{"ima-buf", "d-ng|n-ng|buf"},
	{"ima-modsig", "d-ng|n-ng|sig|d-modsig|modsig"},
	{"evm-sig", "d-ng|n-ng|evmsig|xattrnames|xattrlengths|xattrvalues|iuid|igid|imode"},
	{"ima-ns", "d-ng|n-ng|ns"},
	{"ima-nsreg", "d-ng|n-ng|ns"},
}

// LookupTemplate finds a template by name or by format string, like the
// kernel's lookup_template_desc.
func LookupTemplate(s string) (Template, bool) {
	for _, t := range Templates {
		if t.Name == s || t.Fmt == s {
			return t, true
		}
	}
	return Template{}, false
}

// ParseRule parses one rule with the zero ParseOptions. It returns nil, nil
// for blank and comment lines (first non-blank character '#'). A trailing
// "\n" is ignored; the error's Line is 1.
func ParseRule(line string) (*Rule, error) {
	return ParseRuleOptions(line, ParseOptions{})
}

// ParseRuleOptions is ParseRule with explicit options.
func ParseRuleOptions(line string, o ParseOptions) (*Rule, error) {
	line = strings.TrimSuffix(line, "\n")
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		return nil, &ParseError{Line: 1, Reason: "a rule cannot span lines"}
	}
	return parseLine(line, 1, &o)
}

// Parse parses many lines with the zero ParseOptions; the first bad one
// gives a *ParseError and no rules. Lines are separated by "\n" only, as
// in the kernel: a "\r" stays part of the line (and makes it invalid).
func Parse(text string) ([]*Rule, error) {
	return ParseOptions{}.Parse(text)
}

// Parse parses many lines with options o (see the package-level Parse).
func (o ParseOptions) Parse(text string) ([]*Rule, error) {
	var rules []*Rule
	lineNo := 0
	for len(text) > 0 {
		lineNo++
		line := text
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = ""
		}
		r, err := parseLine(line, lineNo, &o)
		if err != nil {
			return nil, err
		}
		if r != nil {
			rules = append(rules, r)
		}
	}
	return rules, nil
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// parseLine mirrors ima_parse_add_rule (comment/blank handling) and
// ima_parse_rule + ima_validate_rule for one line without its "\n".
func parseLine(line string, lineNo int, o *ParseOptions) (*Rule, error) {
	i := 0
	for i < len(line) && isBlank(line[i]) {
		i++
	}
	if i == len(line) || line[i] == '#' {
		return nil, nil
	}
	p := ruleParser{r: &Rule{}, opts: o}
	s := line[i:]
	for len(s) > 0 {
		j := 0
		for j < len(s) && !isBlank(s[j]) {
			j++
		}
		tok := s[:j]
		if j < len(s) {
			s = s[j+1:]
		} else {
			s = ""
		}
		if tok == "" {
			continue
		}
		if reason := p.token(tok); reason != "" {
			return nil, &ParseError{Line: lineNo, Token: tok, Reason: fmt.Sprintf("%q: %s", tok, reason), Err: p.rangeErr}
		}
	}
	if tok, reason := p.r.validate(&p.toks); reason != "" {
		if tok != "" {
			reason = fmt.Sprintf("%q: %s", tok, reason)
		}
		return nil, &ParseError{Line: lineNo, Token: tok, Reason: reason}
	}
	return p.r, nil
}

// Kernel rule flags (ima_policy.c, ima.h); used for validation.
const (
	flagFunc       = 0x0001
	flagMask       = 0x0002
	flagFSMagic    = 0x0004
	flagUID        = 0x0008
	flagFOwner     = 0x0010
	flagFSUUID     = 0x0020
	flagInMask     = 0x0040
	flagEUID       = 0x0080
	flagPCR        = 0x0100
	flagFSName     = 0x0200
	flagKeyrings   = 0x0400
	flagLabel      = 0x0800
	flagAlgos      = 0x1000
	flagGID        = 0x2000
	flagEGID       = 0x4000
	flagFGroup     = 0x8000
	flagDigSig     = 0x01000000
	flagDirectIO   = 0x02000000
	flagModSig     = 0x20000000
	flagBlacklist  = 0x40000000
	flagVerity     = 0x80000000
	flagTemplate   = 0x00010000 // not a kernel flag: for naming tokens only
	flagLSM        = 0x00020000 // not a kernel flag: for naming tokens only
	numFlagTokens  = 32
	flagsFileHooks = flagFunc | flagMask | flagFSMagic | flagUID | flagFOwner | flagFSUUID |
		flagInMask | flagEUID | flagPCR | flagFSName | flagGID | flagEGID | flagFGroup
)

// flagKeys names the option behind each flag, for error messages.
var flagKeys = map[uint32]string{
	flagFunc: "func", flagMask: "mask", flagInMask: "mask", flagFSMagic: "fsmagic",
	flagUID: "uid", flagFOwner: "fowner", flagFSUUID: "fsuuid", flagEUID: "euid",
	flagPCR: "pcr", flagFSName: "fsname", flagKeyrings: "keyrings", flagLabel: "label",
	flagAlgos: "appraise_algos", flagGID: "gid", flagEGID: "egid", flagFGroup: "fgroup",
	flagDigSig: "appraise_type", flagDirectIO: "permit_directio", flagModSig: "appraise_type",
	flagBlacklist: "appraise_type", flagVerity: "digest_type",
}

// flags returns the kernel's flags for r.
func (r *Rule) flags() uint32 {
	var f uint32
	if r.Func != FuncNone {
		f |= flagFunc
	}
	if r.Mask != 0 {
		if r.MaskIncludes {
			f |= flagInMask
		} else {
			f |= flagMask
		}
	}
	if r.HasFSMagic {
		f |= flagFSMagic
	}
	if r.HasFSUUID {
		f |= flagFSUUID
	}
	if r.FSName != "" {
		f |= flagFSName
	}
	if r.UID.Set() {
		f |= flagUID
	}
	if r.EUID.Set() {
		f |= flagEUID
	}
	if r.GID.Set() {
		f |= flagGID
	}
	if r.EGID.Set() {
		f |= flagEGID
	}
	if r.FOwner.Set() {
		f |= flagFOwner
	}
	if r.FGroup.Set() {
		f |= flagFGroup
	}
	if r.Keyrings != nil {
		f |= flagKeyrings
	}
	if r.Label != nil {
		f |= flagLabel
	}
	if r.HasPCR {
		f |= flagPCR
	}
	if len(r.AppraiseAlgos) > 0 {
		f |= flagAlgos
	}
	if r.DigSigRequired {
		f |= flagDigSig | flagBlacklist
	}
	if r.ModSigAllowed {
		f |= flagModSig
	}
	if r.VerityRequired {
		f |= flagVerity
	}
	if r.PermitDirectIO {
		f |= flagDirectIO
	}
	return f
}

// tokenNames remembers the token that set each flag, for error messages.
type tokenNames struct {
	byBit [numFlagTokens]string
}

func (t *tokenNames) set(flag uint32, tok string) {
	t.byBit[bits.TrailingZeros32(flag)] = tok
}

func (t *tokenNames) name(flag uint32) string {
	if tok := t.byBit[bits.TrailingZeros32(flag)]; tok != "" {
		return tok
	}
	return flagKeys[flag]
}

// Validate checks a rule like the kernel's ima_validate_rule (plus the
// value checks the parser makes: pcr range, ids, template, algorithms).
// Rules from Parse and BuiltIn always pass.
func (r *Rule) Validate() error {
	if r.HasPCR && (r.PCR < 0 || r.PCR >= maxPCR) {
		return &ParseError{Reason: fmt.Sprintf("pcr=%d: out of range 0..%d", r.PCR, maxPCR-1)}
	}
	for _, c := range []IDCond{r.UID, r.EUID, r.GID, r.EGID, r.FOwner, r.FGroup} {
		if c.Set() && c.ID == invalidID {
			return &ParseError{Reason: "id 4294967295 is not a valid id"}
		}
		if c.Op > OpLess {
			return &ParseError{Reason: "invalid comparison"}
		}
	}
	if r.UID.Set() && r.EUID.Set() || r.GID.Set() && r.EGID.Set() {
		return &ParseError{Reason: "uid/euid (and gid/egid) share one field: only one of them per rule"}
	}
	if r.Template != "" {
		if _, ok := LookupTemplate(r.Template); !ok {
			return &ParseError{Reason: fmt.Sprintf("template %q: unknown template", r.Template)}
		}
	}
	if tok, reason := r.validate(&tokenNames{}); reason != "" {
		if tok != "" {
			reason = tok + ": " + reason
		}
		return &ParseError{Token: tok, Reason: reason}
	}
	return nil
}

// validate mirrors ima_validate_rule. It returns the token at fault (or "")
// and a reason, or "", "" when the rule is valid. Long by design: the
// kernel's per-func checks, case by case.
func (r *Rule) validate(t *tokenNames) (string, string) {
	if r.Action == 0 {
		return "", "rule has no action (measure, dont_measure, appraise, dont_appraise, audit, hash, dont_hash)"
	}
	switch r.Action {
	case Measure, DontMeasure, Appraise, DontAppraise, Audit, Hash, DontHash:
	default:
		return "", fmt.Sprintf("invalid action %v", r.Action)
	}
	f := r.flags()
	if r.Action != Measure && f&flagPCR != 0 {
		return t.name(flagPCR), "pcr= is only allowed in measure rules"
	}
	if r.Action != Appraise && f&(flagDigSig|flagModSig|flagBlacklist|flagAlgos) != 0 {
		for _, fl := range []uint32{flagDigSig, flagModSig, flagAlgos} {
			if f&fl != 0 {
				return t.name(fl), "only allowed in appraise rules"
			}
		}
	}
	if r.Template != "" && r.Action != Measure {
		return t.name(flagTemplate), "template= is only allowed in measure rules"
	}
	funcTok := t.name(flagFunc)
	disallowed := func(allowed uint32) (string, string) {
		if extra := f &^ allowed; extra != 0 {
			for bit := uint32(1); bit != 0; bit <<= 1 {
				if extra&bit != 0 {
					return t.name(bit), fmt.Sprintf("not allowed %s", funcScope(r.Func))
				}
			}
		}
		return "", ""
	}
	switch r.Func {
	case FuncNone, FileCheck, MMAPCheck, MMAPCheckReqprot, BPRMCheck, CredsCheck, PostSetattr, FirmwareCheck, PolicyCheck:
		if tok, why := disallowed(flagsFileHooks | flagDigSig | flagDirectIO | flagAlgos | flagBlacklist | flagVerity); why != "" {
			return tok, why
		}
	case ModuleCheck, KexecKernelCheck, KexecInitramfsCheck:
		if tok, why := disallowed(flagsFileHooks | flagDigSig | flagDirectIO | flagModSig | flagBlacklist | flagAlgos); why != "" {
			return tok, why
		}
	case KexecCmdline:
		if r.Action&^(Measure|DontMeasure) != 0 {
			return funcTok, fmt.Sprintf("only measure and dont_measure rules may use it, not %v", r.Action)
		}
		if tok, why := disallowed(flagFunc | flagFSMagic | flagUID | flagFOwner | flagFSUUID | flagEUID |
			flagPCR | flagFSName | flagGID | flagEGID | flagFGroup); why != "" {
			return tok, why
		}
	case KeyCheck, CriticalData:
		if r.Action&^(Measure|DontMeasure) != 0 {
			return funcTok, fmt.Sprintf("only measure and dont_measure rules may use it, not %v", r.Action)
		}
		list := uint32(flagKeyrings)
		if r.Func == CriticalData {
			list = flagLabel
		}
		if tok, why := disallowed(flagFunc | flagUID | flagGID | flagPCR | list); why != "" {
			return tok, why
		}
		if !r.Active() {
			return t.name(flagLSM), fmt.Sprintf("LSM conditions are not allowed %s", funcScope(r.Func))
		}
	case SetxattrCheck:
		if r.Action != Appraise {
			return funcTok, fmt.Sprintf("only appraise rules may use it, not %v", r.Action)
		}
		if f&flagAlgos == 0 {
			return funcTok, "requires appraise_algos="
		}
		if tok, why := disallowed(flagFunc | flagAlgos); why != "" {
			return tok, why
		}
	default:
		return funcTok, "unknown hook"
	}
	if r.Action == Appraise && r.VerityRequired && !r.DigSigRequired {
		return t.name(flagVerity), "an appraise rule with digest_type=verity requires appraise_type=sigv3"
	}
	return "", ""
}

func funcScope(f Func) string {
	if f == FuncNone {
		return "in a rule without func="
	}
	return "with func=" + f.String()
}

const (
	maxPCR    = 64         // sizeof(measured_pcrs) * 8 on 64-bit
	invalidID = 0xffffffff // INVALID_UID / INVALID_GID
)

type ruleParser struct {
	r    *Rule
	opts *ParseOptions
	toks tokenNames
	algo bool // appraise_algos seen (allowed_algos != 0)
	// rangeErr is ErrRange once a kstrtoul of the kernel's overflowed (it
	// returns -ERANGE, which ima_parse_rule passes on).
	rangeErr error
}

// overflow notes that err is kstrtoul's -ERANGE.
func (p *ruleParser) overflow(err error) {
	if errors.Is(err, errRange) {
		p.rangeErr = ErrRange
	}
}

// token applies one token like one iteration of ima_parse_rule's loop; it
// returns "" or the reason the rule is invalid. Long by design: one case per
// option of the kernel's switch, in the kernel's order, so the two can be
// read side by side.
func (p *ruleParser) token(tok string) string {
	r := p.r
	switch tok {
	case "measure":
		return p.action(Measure)
	case "dont_measure":
		return p.action(DontMeasure)
	case "appraise":
		return p.action(Appraise)
	case "dont_appraise":
		return p.action(DontAppraise)
	case "audit":
		return p.action(Audit)
	case "hash":
		return p.action(Hash)
	case "dont_hash":
		return p.action(DontHash)
	case "permit_directio":
		r.PermitDirectIO = true
		return ""
	}
	k := strings.IndexAny(tok, "=<>")
	if k <= 0 || k == len(tok)-1 {
		return "unknown token" + hintEmpty(tok, k)
	}
	key, op, val := tok[:k], tok[k], tok[k+1:]
	if op != '=' {
		switch key {
		case "uid", "euid", "gid", "egid", "fowner", "fgroup":
			return p.id(key, op, val)
		}
		return "unknown token"
	}
	switch key {
	case "uid", "euid", "gid", "egid", "fowner", "fgroup":
		return p.id(key, op, val)
	case "func":
		if r.Func != FuncNone {
			return "func= given twice"
		}
		f, ok := ParseFunc(val)
		if !ok {
			return fmt.Sprintf("unknown func %q", val)
		}
		r.Func = f
		p.toks.set(flagFunc, tok)
	case "mask":
		if r.Mask != 0 {
			return "mask= given twice"
		}
		name, incl := strings.CutPrefix(val, "^")
		m, ok := ParseMask(name)
		if !ok {
			return "mask must be one of MAY_EXEC, MAY_WRITE, MAY_READ, MAY_APPEND, optionally prefixed with ^"
		}
		r.Mask, r.MaskIncludes = m, incl
		if incl {
			p.toks.set(flagInMask, tok)
		} else {
			p.toks.set(flagMask, tok)
		}
	case "fsmagic":
		if r.FSMagic != 0 { // the kernel tests the value, not the flag
			return "fsmagic= given twice"
		}
		v, err := kstrtoull(val, 16)
		if err != nil {
			p.overflow(err)
			return "fsmagic must be a hexadecimal number: " + err.Error()
		}
		r.FSMagic, r.HasFSMagic = v, true
		p.toks.set(flagFSMagic, tok)
	case "fsname": // no repeat check in the kernel: the last one wins
		r.FSName = val
		p.toks.set(flagFSName, tok)
	case "keyrings":
		return p.list(&r.Keyrings, key, val, flagKeyrings, tok)
	case "label":
		return p.list(&r.Label, key, val, flagLabel, tok)
	case "fsuuid":
		if r.FSUUID != ([16]byte{}) { // the kernel tests for the nil uuid
			return "fsuuid= given twice"
		}
		u, ok := parseUUID(val)
		if !ok {
			return "fsuuid must be a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
		}
		r.FSUUID, r.HasFSUUID = u, true
		p.toks.set(flagFSUUID, tok)
	case "obj_user", "obj_role", "obj_type", "subj_user", "subj_role", "subj_type":
		if p.opts.DefaultPolicyActive {
			return "LSM rules are not supported (no LSM policy can resolve it) while the default policy is in force"
		}
		for i, n := range lsmNames {
			if n == key {
				r.LSM[i] = val // no repeat check: the kernel's LSM rule stays NULL
			}
		}
		p.toks.set(flagLSM, tok)
	case "digest_type":
		if r.DigSigRequired {
			return "digest_type= must come before appraise_type="
		}
		if val != "verity" {
			return "digest_type must be verity"
		}
		r.VerityRequired = true
		p.toks.set(flagVerity, tok)
	case "appraise_type":
		switch val {
		case "imasig":
			if r.VerityRequired {
				return "digest_type=verity requires appraise_type=sigv3, not imasig"
			}
			r.DigSigRequired = true
		case "sigv3":
			if !r.VerityRequired {
				return "appraise_type=sigv3 requires a preceding digest_type=verity"
			}
			r.DigSigRequired = true
		case "imasig|modsig":
			if !p.opts.ModSig {
				return "appraise_type=imasig|modsig is not supported by this kernel configuration (no CONFIG_IMA_APPRAISE_MODSIG)"
			}
			if r.VerityRequired {
				return "digest_type=verity requires appraise_type=sigv3, not imasig|modsig"
			}
			r.DigSigRequired, r.ModSigAllowed = true, true
			p.toks.set(flagModSig, tok)
		default:
			return "appraise_type must be imasig, sigv3 or imasig|modsig"
		}
		p.toks.set(flagDigSig, tok)
		p.toks.set(flagBlacklist, tok)
	case "appraise_flag": // deprecated, accepted and ignored by the kernel
	case "appraise_algos":
		if p.algo {
			return "appraise_algos= given twice"
		}
		algos, why := p.algos(val)
		if why != "" {
			return why
		}
		r.AppraiseAlgos, p.algo = algos, true
		p.toks.set(flagAlgos, tok)
	case "pcr": // no repeat check: the last one wins
		v, err := kstrtoint(val)
		if err != nil || v < 0 || v >= maxPCR {
			return fmt.Sprintf("pcr must be a decimal number from 0 to %d", maxPCR-1)
		}
		r.PCR, r.HasPCR = int(v), true
		p.toks.set(flagPCR, tok)
	case "template":
		if r.Action != Measure {
			return "template= is only allowed after the measure action"
		}
		t, ok := LookupTemplate(val)
		if !ok {
			return fmt.Sprintf("unknown template %q", val)
		}
		if r.Template != "" {
			return "template= given twice"
		}
		r.Template = t.Name
		p.toks.set(flagTemplate, tok)
	default:
		return "unknown token"
	}
	return ""
}

func hintEmpty(tok string, k int) string {
	if k > 0 && k == len(tok)-1 {
		return " (empty value)"
	}
	return ""
}

func (p *ruleParser) action(a Action) string {
	if p.r.Action != 0 {
		return fmt.Sprintf("a rule has one action, %v was already given", p.r.Action)
	}
	p.r.Action = a
	return ""
}

// id handles uid/euid/gid/egid/fowner/fgroup with =, > or <.
func (p *ruleParser) id(key string, op byte, val string) string {
	r := p.r
	var c *IDCond
	var taken bool
	var flag uint32
	switch key {
	case "uid", "euid":
		taken = r.UID.Set() || r.EUID.Set()
		c, flag = &r.UID, flagUID
		if key == "euid" {
			c, flag = &r.EUID, flagEUID
		}
	case "gid", "egid":
		taken = r.GID.Set() || r.EGID.Set()
		c, flag = &r.GID, flagGID
		if key == "egid" {
			c, flag = &r.EGID, flagEGID
		}
	case "fowner":
		taken, c, flag = r.FOwner.Set(), &r.FOwner, flagFOwner
	case "fgroup":
		taken, c, flag = r.FGroup.Set(), &r.FGroup, flagFGroup
	}
	if taken {
		switch key {
		case "uid", "euid":
			return "repeated uid/euid condition (uid and euid share one field)"
		case "gid", "egid":
			return "repeated gid/egid condition (gid and egid share one field)"
		}
		return key + " given twice"
	}
	v, err := kstrtoull(val, 10)
	if err != nil {
		p.overflow(err)
		return key + " must be a decimal number: " + err.Error()
	}
	if v >= invalidID {
		return key + " must be below 4294967295"
	}
	c.ID = uint32(v)
	switch op {
	case '=':
		c.Op = OpEqual
	case '>':
		c.Op = OpGreater
	case '<':
		c.Op = OpLess
	}
	p.toks.set(flag, key+string(op)+val)
	return ""
}

// list sets *dst, once, to the items of val, a |-separated list option
// (keyrings=, label=) that tok sets with flag.
func (p *ruleParser) list(dst *[]string, key, val string, flag uint32, tok string) string {
	if *dst != nil {
		return key + "= given twice"
	}
	l, why := optList(val)
	if why != "" {
		return why
	}
	*dst = l
	p.toks.set(flag, tok)
	return ""
}

func (p *ruleParser) algos(val string) ([]string, string) {
	avail := p.opts.HashAlgos
	if avail == nil {
		avail = DefaultHashAlgos
	}
	var set uint32
	for _, name := range strings.Split(val, ",") {
		idx := -1
		for i, n := range HashAlgoNames {
			if n == name {
				idx = i
				break
			}
		}
		if idx < 0 {
			return nil, fmt.Sprintf("unknown hash algorithm %q", name)
		}
		ok := false
		for _, a := range avail {
			if a == name {
				ok = true
			}
		}
		if !ok {
			return nil, fmt.Sprintf("unavailable hash algorithm %q", name)
		}
		set |= 1 << idx
	}
	var out []string
	for i, n := range HashAlgoNames {
		if set&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out, ""
}

// optList mirrors ima_alloc_rule_opt_list: "|"-separated, no empty item.
func optList(val string) ([]string, string) {
	items := strings.Split(val, "|")
	for _, it := range items {
		if it == "" {
			return nil, "empty item in a |-separated list"
		}
	}
	return items, ""
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// parseUUID mirrors uuid_parse: the first 36 characters must be a UUID;
// like the kernel, anything after them is ignored.
func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) < 36 {
		return u, false
	}
	for i := 0; i < 36; i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return u, false
			}
		} else if !isHex(s[i]) {
			return u, false
		}
	}
	si := [16]int{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}
	for i, o := range si {
		u[i] = hexVal(s[o])<<4 | hexVal(s[o+1])
	}
	return u, true
}

var (
	errNoDigits = errors.New("no digits")
	errRange    = errors.New("out of range")
	errTrailing = errors.New("trailing characters")
)

// kstrtoull mirrors the kernel's kstrtoull: an optional '+', for base 16 an
// optional "0x"/"0X", at least one digit, nothing after the digits.
func kstrtoull(s string, base uint64) (uint64, error) {
	s = strings.TrimPrefix(s, "+")
	return kstrtoullNoSign(s, base)
}

func kstrtoullNoSign(s string, base uint64) (uint64, error) {
	if base == 16 && len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s = s[2:]
	}
	var res uint64
	n := 0
	overflow := false
	for n < len(s) {
		c := s[n]
		var v uint64
		switch {
		case c >= '0' && c <= '9':
			v = uint64(c - '0')
		case c|0x20 >= 'a' && c|0x20 <= 'f':
			v = uint64(c|0x20-'a') + 10
		default:
			v = 99
		}
		if v >= base {
			break
		}
		if res > (^uint64(0)-v)/base {
			overflow = true
		}
		res = res*base + v
		n++
	}
	if overflow {
		return 0, errRange
	}
	if n == 0 {
		return 0, errNoDigits
	}
	if n != len(s) {
		return 0, errTrailing
	}
	return res, nil
}

// kstrtoint mirrors kstrtoint(s, 10): an optional '-' or '+', int range.
func kstrtoint(s string) (int64, error) {
	if strings.HasPrefix(s, "-") {
		v, err := kstrtoullNoSign(s[1:], 10)
		if err != nil {
			return 0, err
		}
		if v > 1<<31 {
			return 0, errRange
		}
		return -int64(v), nil
	}
	v, err := kstrtoull(s, 10)
	if err != nil {
		return 0, err
	}
	if v > 1<<31-1 {
		return 0, errRange
	}
	return int64(v), nil
}
