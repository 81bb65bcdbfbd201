package policy

import (
	"strconv"
)

// String returns the rule as the kernel's policy file reads it back
// (ima_policy_show), without the newline: tokens in the kernel's order,
// each followed by one space, so the result always ends in " ".
//
// An inactive rule (see Active) is never printed by the kernel; String still
// renders it, with its LSM conditions where an LSM-enabled kernel prints
// them, so that it can be shown and re-parsed. Policy.String leaves it out.
func (r *Rule) String() string {
	return string(r.AppendText(make([]byte, 0, 64)))
}

// AppendText appends String's form of the rule to b. Long by design: one
// step per option of ima_policy_show, in its order (the read-back form is
// byte-compatible with the kernel's).
func (r *Rule) AppendText(b []byte) []byte {
	for _, n := range actionNames {
		if r.Action&n.a != 0 {
			b = append(b, n.name...)
		}
	}
	b = append(b, ' ')
	if r.Func != FuncNone {
		b = append(b, "func="...)
		b = append(b, r.Func.String()...)
		b = append(b, ' ')
	}
	if r.Mask != 0 {
		for _, n := range maskNames {
			if r.Mask&n.m != 0 {
				b = append(b, "mask="...)
				if r.MaskIncludes {
					b = append(b, '^')
				}
				b = append(b, n.name...)
			}
		}
		b = append(b, ' ')
	}
	if r.HasFSMagic {
		b = append(b, "fsmagic=0x"...)
		b = strconv.AppendUint(b, r.FSMagic, 16)
		b = append(b, ' ')
	}
	if r.FSName != "" {
		// snprintf into a 64-byte buffer: at most 63 bytes survive.
		name := r.FSName
		if len(name) > 63 {
			name = name[:63]
		}
		b = append(b, "fsname="...)
		b = append(b, name...)
		b = append(b, ' ')
	}
	if r.Keyrings != nil {
		b = appendList(append(b, "keyrings="...), r.Keyrings)
	}
	if r.Label != nil {
		b = appendList(append(b, "label="...), r.Label)
	}
	if r.HasPCR {
		b = append(b, "pcr="...)
		b = strconv.AppendInt(b, int64(r.PCR), 10)
		b = append(b, ' ')
	}
	if r.HasFSUUID {
		b = append(b, "fsuuid="...)
		b = appendUUID(b, r.FSUUID)
		b = append(b, ' ')
	}
	b = appendID(b, "uid", r.UID)
	b = appendID(b, "euid", r.EUID)
	b = appendID(b, "gid", r.GID)
	b = appendID(b, "egid", r.EGID)
	b = appendID(b, "fowner", r.FOwner)
	b = appendID(b, "fgroup", r.FGroup)
	if len(r.AppraiseAlgos) > 0 {
		b = append(b, "appraise_algos="...)
		for i, a := range r.AppraiseAlgos {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, a...)
		}
		b = append(b, ' ')
	}
	for i, v := range r.LSM {
		if v != "" {
			b = append(b, lsmNames[i]...)
			b = append(b, '=')
			b = append(b, v...)
			b = append(b, ' ')
		}
	}
	if r.Template != "" {
		b = append(b, "template="...)
		b = append(b, r.Template...)
		b = append(b, ' ')
	}
	if r.DigSigRequired {
		switch {
		case r.VerityRequired:
			b = append(b, "appraise_type=sigv3 "...)
		case r.ModSigAllowed:
			b = append(b, "appraise_type=imasig|modsig "...)
		default:
			b = append(b, "appraise_type=imasig "...)
		}
	}
	if r.VerityRequired {
		b = append(b, "digest_type=verity "...)
	}
	if r.PermitDirectIO {
		b = append(b, "permit_directio "...)
	}
	return b
}

func appendList(b []byte, items []string) []byte {
	for i, it := range items {
		if i > 0 {
			b = append(b, '|')
		}
		b = append(b, it...)
	}
	return append(b, ' ')
}

// appendID prints an id condition with "%d" of the 32-bit id, like the
// kernel: ids of 2^31 and above print as negative numbers.
func appendID(b []byte, key string, c IDCond) []byte {
	if !c.Set() {
		return b
	}
	b = append(b, key...)
	b = append(b, c.Op.String()...)
	b = strconv.AppendInt(b, int64(int32(c.ID)), 10)
	return append(b, ' ')
}

// appendUUID prints like the kernel's %pU: lowercase, big-endian.
func appendUUID(b []byte, u [16]byte) []byte {
	const hexdigits = "0123456789abcdef"
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexdigits[c>>4], hexdigits[c&0xf])
	}
	return b
}

func appendInt(b []byte, v int64) []byte { return strconv.AppendInt(b, v, 10) }
