package policy

// Event is what a hook saw.
type Event struct {
	Func           Func
	Mask           Mask     // the access: MAY_* bits
	FSMagic        uint64   // the file's super block magic
	FSUUID         [16]byte // the file system's uuid
	FSName         string   // the file system type's name ("ext4")
	UID, EUID      uint32   // of the task (as the policy's namespace sees them)
	GID, EGID      uint32   //
	FOwner, FGroup uint32   // of the inode
	Keyring, Label string   // KEY_CHECK keyring / CRITICAL_DATA label ("" = none)

	// SUID and SGID are the task's saved ids. With CapSetUID (CAP_SETUID)
	// an euid condition also holds when the saved or real uid satisfies
	// it; likewise egid with CapSetGID (ima_match_rules).
	SUID, SGID           uint32
	CapSetUID, CapSetGID bool
}

// Decision is what applies to an event, with the kernel's first-match
// semantics per action kind.
type Decision struct {
	Actions       Action   // subset of Measure|Appraise|Audit|Hash that apply
	PCR           int      // -1 unless a matching rule says pcr=
	Template      string   // "" unless a matching rule says template=
	AppraiseType  string   // "imasig", "imasig|modsig", "sigv3", ""
	AppraiseAlgos []string // from the deciding appraise rule's appraise_algos=
	DigestVerity  bool     // a matching rule says digest_type=verity

	// PermitDirectIO: a matching rule says permit_directio.
	PermitDirectIO bool
}

// Match returns what the policy decides for ev, like ima_match_policy asked
// about all four action kinds (measure, appraise, audit, hash):
//
//   - rules are tried in order; a rule whose action kind is already decided
//     is skipped;
//   - the first matching rule of a kind decides it: measure/appraise/audit/
//     hash add the action, dont_* decide "no";
//   - a matching appraise rule clears a hash decided before it (the kernel's
//     action &= ~IMA_HASH);
//   - the option flags (appraise type, verity, permit_directio) of every
//     matching rule accumulate; pcr= and template= come from the last
//     matching rule that has them, appraise_algos= from the deciding
//     appraise rule.
func (p Policy) Match(ev Event) Decision {
	d := Decision{PCR: -1}
	actmask := doMask | doMask<<1
	var digsig, modsig bool
	for _, r := range p {
		if r.Action&actmask == 0 {
			continue
		}
		if !r.Matches(ev) {
			continue
		}
		digsig = digsig || r.DigSigRequired
		modsig = modsig || r.ModSigAllowed
		d.DigestVerity = d.DigestVerity || r.VerityRequired
		d.PermitDirectIO = d.PermitDirectIO || r.PermitDirectIO
		d.Actions |= r.Action & doMask
		if r.Action&Appraise != 0 {
			d.Actions &^= Hash
			if len(r.AppraiseAlgos) > 0 {
				d.AppraiseAlgos = r.AppraiseAlgos
			}
		}
		if r.Action&doMask != 0 {
			actmask &^= r.Action | r.Action<<1
		} else {
			actmask &^= r.Action | r.Action>>1
		}
		if r.HasPCR {
			d.PCR = r.PCR
		}
		if r.Template != "" {
			d.Template = r.Template
		}
		if actmask == 0 {
			break
		}
	}
	if digsig {
		switch {
		case d.DigestVerity:
			d.AppraiseType = "sigv3"
		case modsig:
			d.AppraiseType = "imasig|modsig"
		default:
			d.AppraiseType = "imasig"
		}
	}
	return d
}

// Matches reports whether the rule's conditions hold for ev
// (ima_match_rules). It ignores the rule's action.
func (r *Rule) Matches(ev Event) bool {
	if r.Func != FuncNone && r.Func != ev.Func && ev.Func != PostSetattr {
		return false
	}
	if ev.Func == KeyCheck || ev.Func == CriticalData {
		return r.Func == ev.Func && r.matchData(ev)
	}
	if r.Mask != 0 && ev.Func != PostSetattr {
		if r.MaskIncludes {
			if r.Mask&ev.Mask == 0 {
				return false
			}
		} else if r.Mask != ev.Mask {
			return false
		}
	}
	if r.HasFSMagic && r.FSMagic != ev.FSMagic {
		return false
	}
	if r.FSName != "" && r.FSName != ev.FSName {
		return false
	}
	if r.HasFSUUID && r.FSUUID != ev.FSUUID {
		return false
	}
	if !r.UID.Holds(ev.UID) {
		return false
	}
	if r.EUID.Set() {
		if ev.CapSetUID {
			if !r.EUID.Holds(ev.EUID) && !r.EUID.Holds(ev.SUID) && !r.EUID.Holds(ev.UID) {
				return false
			}
		} else if !r.EUID.Holds(ev.EUID) {
			return false
		}
	}
	if !r.GID.Holds(ev.GID) {
		return false
	}
	if r.EGID.Set() {
		if ev.CapSetGID {
			if !r.EGID.Holds(ev.EGID) && !r.EGID.Holds(ev.SGID) && !r.EGID.Holds(ev.GID) {
				return false
			}
		} else if !r.EGID.Holds(ev.EGID) {
			return false
		}
	}
	if !r.FOwner.Holds(ev.FOwner) || !r.FGroup.Holds(ev.FGroup) {
		return false
	}
	// An LSM condition that no LSM resolved never holds.
	return r.Active()
}

// matchData mirrors ima_match_rule_data for KEY_CHECK and CRITICAL_DATA:
// only uid= is checked besides the keyring/label list.
func (r *Rule) matchData(ev Event) bool {
	if !r.UID.Holds(ev.UID) {
		return false
	}
	list := r.Keyrings
	data := ev.Keyring
	if r.Func == CriticalData {
		list, data = r.Label, ev.Label
	}
	if list == nil {
		return true
	}
	if data == "" {
		return false
	}
	for _, it := range list {
		if it == data {
			return true
		}
	}
	return false
}
