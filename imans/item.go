package imans

import "github.com/imafs/imafs/measurelog"

// Item is one entry for RecordAll and the namespace whose list it goes in.
type Item struct {
	NS    *Namespace
	Entry *measurelog.Entry
	// Host, when set for a container's item, is the form of Entry the
	// host's list (and journal) takes instead of Entry: the kernel's own
	// record, of which Entry is the container's view (kernelsrc renders an
	// ima-nsreg record as ima-ng for the container). Nil: Entry.
	Host *measurelog.Entry
}

// hostEntry is the entry the host list takes.
func (it Item) hostEntry() *measurelog.Entry {
	if it.Host != nil {
		return it.Host
	}
	return it.Entry
}
