package policy

// Questions a measurement source asks of a policy, answered from the rules
// themselves (never from their printed form).

// AppliesTo reports whether the rule can match hook fn: it names fn, or no
// func at all.
func (r *Rule) AppliesTo(fn Func) bool {
	return r.Func == FuncNone || r.Func == fn
}

// DependsOnCaller reports whether the rule's decision for hook fn can
// differ between two tasks of one namespace opening the same file: a
// condition on the task's uid, euid, gid, egid or LSM subject, or, except
// for BPRM_CHECK (always MAY_EXEC), on the access mask.
func (r *Rule) DependsOnCaller(fn Func) bool {
	if r.UID.Set() || r.EUID.Set() || r.GID.Set() || r.EGID.Set() {
		return true
	}
	for _, f := range []LSMField{SubjUser, SubjRole, SubjType} {
		if r.LSM[f] != "" {
			return true
		}
	}
	return r.Mask != 0 && fn != BPRMCheck
}

// DependsOnCaller reports whether a rule that can match hook fn depends on
// the caller (Rule.DependsOnCaller): if not, a decision for fn may be
// cached per file.
func (p Policy) DependsOnCaller(fn Func) bool {
	for _, r := range p {
		if r.AppliesTo(fn) && r.DependsOnCaller(fn) {
			return true
		}
	}
	return false
}

// Uses reports whether a rule with one of actions can match hook fn (a
// source watches the events of fn only then).
func (p Policy) Uses(fn Func, actions Action) bool {
	for _, r := range p {
		if r.Action&actions != 0 && r.AppliesTo(fn) {
			return true
		}
	}
	return false
}

// Appraises reports whether a rule of the policy appraises.
func (p Policy) Appraises() bool {
	for _, r := range p {
		if r.Action&Appraise != 0 {
			return true
		}
	}
	return false
}
