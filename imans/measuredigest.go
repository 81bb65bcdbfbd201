package imans

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// FileAttrs are what an entry records of a measured file besides its
// digest and name (the iuid, igid, imode and sig fields).
type FileAttrs struct {
	UID, GID uint32
	Mode     uint16
	Sig      []byte // security.ima when it is a signature, else nil
}

// FileAttrsOf reads f's owner, mode and signature.
func FileAttrsOf(f *os.File) (FileAttrs, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return FileAttrs{}, fmt.Errorf("attributes of %s: stat: %w", f.Name(), err)
	}
	return FileAttrs{UID: st.Uid, GID: st.Gid, Mode: uint16(st.Mode), Sig: signature(f)}, nil
}

// MeasureDigest is MeasureFile for a digest computed elsewhere (the BPF LSM
// mmap source hashes the file in the kernel before the mapping exists): it
// matches ev against ns's policy and, when a measure rule applies, records
// digest (in algo) under name through the rule's template (else ns's) into
// the rule's PCR (else 10). The entry is rendered by measurelog.NewEntry,
// as every other measurement; a template that cannot carry algo (the ima
// template wants sha1) is an error, which the caller records as a
// violation.
func (r *Registry) MeasureDigest(ns *Namespace, ev policy.Event, algo measurelog.Algo, digest []byte, attrs FileAttrs, name string) (policy.Decision, error) {
	d := ns.Policy().Match(ev)
	if d.Actions&policy.Measure == 0 {
		return d, nil
	}
	if len(digest) != algo.Size() {
		return d, fmt.Errorf("measure %s in %s: %d-byte digest for %s", name, ns.ID, len(digest), algo)
	}
	template, pcr := ns.Target(d)
	m := attrs.measurement(ns, name)
	m.FileDigest, m.FileAlgo = digest, algo
	return d, r.recordMeasurement(ns, template, pcr, m)
}

// measurement is the part of an entry's measurement that a's file gives,
// under name in ns.
func (a FileAttrs) measurement(ns *Namespace, name string) measurelog.Measurement {
	return measurelog.Measurement{Name: name, Sig: a.Sig, Namespace: ns.Label(), UID: a.UID, GID: a.GID, Mode: a.Mode}
}
