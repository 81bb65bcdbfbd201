package fanotify

import (
	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
)

// violation records a violation entry (all-zero digest, PCR extended with
// 0xff) for m in the container's list and counter.
func (w *watch) violation(template string, pcr uint32, m measurelog.Measurement, kind string, log *logrus.Entry) {
	entry, err := measurelog.NewFileViolation(template, pcr, m)
	if err == nil {
		err = w.e.reg.Record(w.ns, entry)
	}
	if err != nil {
		log.WithError(err).WithField("violation", kind).Error("fanotify: record violation")
		return
	}
	w.e.stats.violations.Add(1)
	log.WithField("violation", kind).Warn("fanotify: measurement violation")
}

// fileViolation is what a violation record of p's file carries, as
// ima_add_violation passes the file: its name, the container's label,
// the inode's ids and mode, and the attributes template shows.
func (w *watch) fileViolation(p *plan, template string, algo measurelog.Algo) measurelog.Measurement {
	m := measurelog.Measurement{
		Name:      w.fileName(p),
		FileAlgo:  algo,
		Namespace: w.ns.Label(),
		UID:       p.uidMap.toNS(p.st.Uid),
		GID:       p.gidMap.toNS(p.st.Gid),
		Mode:      uint16(p.st.Mode),
	}
	if err := imans.ReadTemplateXattrs(p.ev.fd, template, &m); err != nil {
		p.log.WithError(err).Debug("fanotify: violation attributes")
	}
	return m
}

// noFileViolation is what a violation record without a file (a lost
// event) carries: a name and the container's label.
func (w *watch) noFileViolation(name string) measurelog.Measurement {
	return measurelog.Measurement{Name: name, FileAlgo: w.ns.Algo(), Namespace: w.ns.Label()}
}
