package imans

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/appraise"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// evmImaXattrDigsig is the security.ima type byte of a signature (the only
// kind the sig field keeps).
const evmImaXattrDigsig = 0x03

// MeasureFile matches ev against ns's policy and, when a measure rule
// applies, hashes f with ns.Algo() (and SHA-1 too when the template's "d"
// field needs it, as ima_eventdigest_init), reads the attributes the
// template shows (ReadTemplateXattrs), renders it through the rule's template
// (else ns's) into the rule's PCR (else 10) and records it. It returns the
// decision so a caller can also appraise or audit.
func (r *Registry) MeasureFile(ns *Namespace, ev policy.Event, f *os.File, name string) (policy.Decision, error) {
	d := ns.Policy().Match(ev)
	if d.Actions&policy.Measure == 0 {
		return d, nil
	}
	attrs, err := FileAttrsOf(f)
	if err != nil {
		return d, fmt.Errorf("measure %s in %s: %w", name, ns.ID, err)
	}
	template, pcr := ns.Target(d)
	algos, err := HashAlgos(template, ns.Algo())
	if err != nil {
		return d, fmt.Errorf("measure %s in %s: %w", name, ns.ID, err)
	}
	h := NewMultiHash(algos)
	if err := hashInto(h, f); err != nil {
		return d, fmt.Errorf("measure %s in %s: read: %w", name, ns.ID, err)
	}
	m := attrs.measurement(ns, name)
	SetDigests(&m, algos, h.Sums())
	if err := ReadTemplateXattrs(int(f.Fd()), template, &m); err != nil {
		return d, fmt.Errorf("measure %s in %s: %w", name, ns.ID, err)
	}
	return d, r.recordMeasurement(ns, template, pcr, m)
}

// recordMeasurement renders m through template into pcr and records it in
// ns: the one tail of MeasureFile and MeasureDigest.
func (r *Registry) recordMeasurement(ns *Namespace, template string, pcr uint32, m measurelog.Measurement) error {
	e, err := measurelog.NewEntry(template, pcr, m)
	if err != nil {
		return fmt.Errorf("measure %s in %s: %w", m.Name, ns.ID, err)
	}
	if err := r.Record(ns, e); err != nil {
		return fmt.Errorf("measure %s: %w", m.Name, err)
	}
	return nil
}

// signature returns f's security.ima value when it is a signature, else nil.
func signature(f *os.File) []byte {
	buf := make([]byte, 1024)
	n, err := unix.Fgetxattr(int(f.Fd()), appraise.XattrName, buf)
	if err != nil || n == 0 || buf[0] != evmImaXattrDigsig {
		return nil
	}
	return buf[:n]
}

// EventFor fills the file-related fields of a policy event for f (owner,
// group and filesystem magic); the caller sets Func, Mask and the task ids.
func EventFor(f *os.File, fn policy.Func, mask policy.Mask, uid, gid uint32) (policy.Event, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return policy.Event{}, fmt.Errorf("event for %s: stat: %w", f.Name(), err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return policy.Event{}, fmt.Errorf("event for %s: statfs: %w", f.Name(), err)
	}
	return policy.Event{
		Func: fn, Mask: mask,
		FSMagic: uint64(sfs.Type),
		UID:     uid, EUID: uid, GID: gid, EGID: gid,
		FOwner: st.Uid, FGroup: st.Gid,
	}, nil
}
