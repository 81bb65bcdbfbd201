package kernelsrc

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/imafs/imafs/measurelog"
)

// ErrBinding is what VerifyBinding's errors wrap.
var ErrBinding = errors.New("container list not bound to the host list")

// VerifyBinding checks that a container's list is the view of the host list
// the kernel source serves for the container id: host is the host's list
// (the kernel's own binary_runtime_measurements, or imafs's host list),
// container the container's, both decoded in full.
//
// The container's registrations are those of the host list's
// "ima_ns_register" records with label id (pidNS, when not empty, must be
// their "pid:[INODE]" too). Walking the host list in order, every entry
// tagged with one of them must be the next entry of the container's list,
// unchanged or as ContainerView renders it, unless the container's list
// already holds that rendering (the kernel's duplicate rule drops it: two
// registrations measure a file twice). Any other host entry may be the next
// container entry when equal to it (an entry imafs itself measured in the
// container goes in both lists), and a container entry equal to an earlier
// host entry is one the host list's duplicate rule dropped. Every container
// entry must be matched: so a container entry dropped, altered, added (but
// for a copy of a host entry) or moved fails. The
// container's first entry, its boot_aggregate, must carry the host list's
// boot_aggregate digest.
//
// The host list's integrity is not checked here: replay it against the
// hardware TPM first (evmctl ima_measurement, a Keylime quote check).
func VerifyBinding(host, container []*measurelog.Entry, id, pidNS string) error {
	if len(host) == 0 || len(container) == 0 {
		return fmt.Errorf("%w: empty list", ErrBinding)
	}
	if err := sameBootAggregate(host[0], container[0]); err != nil {
		return err
	}
	tags := registrations(host, id, pidNS)
	seen := map[string]bool{dupKey(container[0]): true} // the container list's
	inHost := map[string]bool{}                         // the host entries walked
	j := 1
	// dropped skips container entries, other than h's, that an earlier host
	// entry has: the host list's duplicate rule dropped them (imafs measured
	// in the container what the host list already had). h is nil at the end.
	dropped := func(h *measurelog.Entry) {
		for j < len(container) && !container[j].Violation && inHost[dupKey(container[j])] &&
			(h == nil || !equalEntry(h, container[j]) && !equalEntry(viewOf(h), container[j])) {
			seen[dupKey(container[j])] = true
			j++
		}
	}
	for i, h := range host[1:] {
		tagged := tags[Label(h)]
		dropped(h)
		next := j < len(container) && (equalEntry(h, container[j]) || tagged && equalEntry(viewOf(h), container[j]))
		switch {
		case next:
			seen[dupKey(container[j])] = true
			j++
		case tagged && !h.Violation && seen[dupKey(viewOf(h))]:
			// A duplicate of an entry the container's list has.
		case tagged && j < len(container):
			return fmt.Errorf("%w: host entry %d (%s %q) is not container entry %d (%s %q)",
				ErrBinding, i+1, h.Template, h.Name(), j, container[j].Template, container[j].Name())
		case tagged:
			return fmt.Errorf("%w: host entry %d (%s %q) is missing from the container's list", ErrBinding, i+1, h.Template, h.Name())
		}
		if !h.Violation {
			inHost[dupKey(h)] = true
		}
	}
	dropped(nil)
	if j < len(container) {
		return fmt.Errorf("%w: container entry %d (%s %q) has no host entry", ErrBinding, j, container[j].Template, container[j].Name())
	}
	return nil
}

// registrations returns the ns tags of the host list's registration
// records of label id (and pidNS when set), and id itself for the bare
// labels of the v1 series.
func registrations(host []*measurelog.Entry, id, pidNS string) map[string]bool {
	tags := map[string]bool{id: true}
	for _, e := range host {
		if e.Template != measurelog.TemplateIMABuf || e.Name() != recordRegister || len(e.Fields) < 3 {
			continue
		}
		tag, nsid, found := strings.Cut(string(e.Fields[2]), " ")
		label, _, ok := splitTag(tag)
		if found && ok && label == id && (pidNS == "" || nsid == pidNS) {
			tags[tag] = true
		}
	}
	return tags
}

func sameBootAggregate(h, c *measurelog.Entry) error {
	if h.Name() != measurelog.BootAggregateName || c.Name() != measurelog.BootAggregateName {
		return fmt.Errorf("%w: lists do not start with boot_aggregate (host %q, container %q)", ErrBinding, h.Name(), c.Name())
	}
	ha, hd, herr := h.FileDigest()
	ca, cd, cerr := c.FileDigest()
	if herr != nil || cerr != nil || ha != ca || !bytes.Equal(hd, cd) {
		return fmt.Errorf("%w: boot_aggregate differs (host %s:%x, container %s:%x)", ErrBinding, ha, hd, ca, cd)
	}
	return nil
}

// viewOf is e's ContainerView, or e itself.
func viewOf(e *measurelog.Entry) *measurelog.Entry {
	if v, ok := ContainerView(e); ok {
		return v
	}
	return e
}

func equalEntry(a, b *measurelog.Entry) bool {
	return a.PCR == b.PCR && a.Template == b.Template && a.Violation == b.Violation &&
		slices.EqualFunc(a.Fields, b.Fields, bytes.Equal)
}

// dupKey is what the duplicate rule compares: template digest and PCR.
func dupKey(e *measurelog.Entry) string {
	return fmt.Sprintf("%d:%x", e.PCR, e.TemplateDigest(measurelog.SHA1))
}
