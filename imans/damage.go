package imans

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/measurelog"
)

// A journal damaged other than by a torn tail (a corrupt record or length
// field, a bad digest, an empty or missing journal next to a valid attach
// record, an empty or missing host journal in a state directory that was in
// use) is never cut silently: measurelog keeps the original byte for byte
// (NAME.corrupt-<unix nanoseconds>; an empty NAME.missing-<unix
// nanoseconds> for a missing one), the valid prefix is restored, the
// namespace is marked degraded (Registry.Degraded: imafs ps, the metric
// imafs_namespace_degraded, an error in the log) for as long as the
// quarantined original is there, and a violation entry named
// JournalDamagedName is recorded in the list, so a verifier sees that
// entries are missing (the kernel's violation: zero template digest, the
// PCR extended with 0xff.., the violations counter incremented).

// JournalDamagedName is the file name field of the violation entry recorded
// in a list whose journal was found damaged.
const JournalDamagedName = "<journal-damaged>"

// initializedName marks a state directory whose host journal has been
// started: from then on an empty or missing host journal is damage.
const initializedName = "initialized"

// replayExpecting replays the journal at path into list like
// replayJournal; when expect is set the journal must hold entries, and a
// missing or empty one is damage too. Damage comes back as dmg with the
// journal usable (its valid prefix); err is any other failure.
func (s *state) replayExpecting(what, path string, list *measurelog.List, expect bool) (j *jfile, dmg *measurelog.DamageError, err error) {
	if expect {
		fi, serr := os.Stat(path)
		if serr != nil && !errors.Is(serr, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("journal %s: %w", path, serr)
		}
		if serr != nil || fi.Size() == 0 {
			what := "journal missing"
			if serr == nil {
				what = "journal empty"
			}
			saved, qerr := measurelog.Quarantine(path, nil)
			if qerr == nil && saved == "" {
				// Nothing to keep: an empty mark says it was missing.
				saved = fmt.Sprintf("%s.missing-%d", path, time.Now().UnixNano())
				qerr = writeFileSync(saved, nil)
			}
			if qerr != nil {
				return nil, nil, qerr
			}
			dmg = &measurelog.DamageError{Path: path, Saved: saved, Missing: true, Decode: &measurelog.DecodeError{Reason: what}}
		}
	}
	j, err = s.replayJournal(what, path, list)
	if j == nil {
		return nil, nil, err
	}
	var de *measurelog.DamageError
	if errors.As(err, &de) {
		dmg, err = de, nil
	}
	if err != nil {
		j.f.Close()
		return nil, nil, err
	}
	return j, dmg, nil
}

// noteDamage marks ns degraded for a journal damaged now (dmg) or earlier
// (a quarantined original still next to the journal) and, for fresh damage,
// records the violation entry. It runs once ns's replayed entries are in
// its list and its journal is open.
func (r *Registry) noteDamage(ns *Namespace, journal string, dmg *measurelog.DamageError) {
	if dmg == nil {
		old, _ := filepath.Glob(journal + ".corrupt-*")
		missing, _ := filepath.Glob(journal + ".missing-*")
		if old = append(old, missing...); len(old) > 0 {
			reason := "journal-damaged earlier: original kept as " + strings.Join(old, ", ")
			ns.damaged.Store(&reason)
			r.log.WithFields(logrus.Fields{"id": ns.ID, "journal": journal, "quarantined": old}).
				Error("journal damaged earlier: list incomplete (remove the quarantined original to clear)")
		}
		return
	}
	reason := fmt.Sprintf("journal-damaged: %s at offset %d; %d entries restored", dmg.Decode.Reason, dmg.Decode.Offset, dmg.Kept)
	if dmg.Saved != "" {
		reason += "; original kept as " + dmg.Saved
	}
	ns.damaged.Store(&reason)
	fields := logrus.Fields{"id": ns.ID, "journal": journal, "saved": dmg.Saved, "size": dmg.Size,
		"offset": dmg.Decode.Offset, "restored": dmg.Kept, "reason": dmg.Decode.Reason}
	r.log.WithFields(fields).Error("journal damaged: valid prefix restored, original quarantined, violation recorded")
	v, err := measurelog.NewViolation(ns.Template(), DefaultPCR, JournalDamagedName, ns.Algo())
	if err == nil {
		err = r.RecordAll([]Item{{NS: ns, Entry: v}})
	}
	if err != nil {
		r.log.WithError(err).WithFields(fields).Error("journal damaged: violation entry not written yet")
	}
}

// hostJournalExpected reports whether the state directory was in use, so
// that its host journal must hold entries.
func (s *state) hostJournalExpected() bool {
	if _, err := os.Stat(filepath.Join(s.dir, initializedName)); err == nil {
		return true
	}
	ids, _ := s.records()
	return len(ids) > 0
}

// markInitialized notes that the host journal holds entries.
func (s *state) markInitialized() {
	path := filepath.Join(s.dir, initializedName)
	if _, err := os.Stat(path); err == nil {
		return
	}
	if err := writeFileSync(path, []byte("imafs state directory: host.journal started\n")); err != nil {
		s.log.WithError(err).Warn("state directory: write the initialized mark")
	}
}
