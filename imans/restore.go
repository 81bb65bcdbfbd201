package imans

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/nsresolve"
	"github.com/imafs/imafs/policy"
)

// openState opens the state directory and replays the host's journal.
func (r *Registry) openState() error {
	s, err := newState(r.opts.StateDir, r.log, r)
	if err != nil {
		return err
	}
	path := filepath.Join(s.dir, hostJournalName)
	r.host.List = newList() // the registry is not shared yet
	j, dmg, err := s.replayExpecting(HostID, path, r.host.List, s.hostJournalExpected())
	if err != nil {
		return fmt.Errorf("host journal: %w", err)
	}
	s.host = j
	r.host.journal = j
	r.state = s
	r.noteDamage(r.host, path, dmg)
	return nil
}

func (r *Registry) closeState() {
	if r.state == nil {
		return
	}
	s := r.state
	s.mu.Lock()
	for s.flushing {
		s.cond.Wait()
	}
	if len(s.owed) > 0 && !s.frozen && !s.host.closed {
		s.flush(r.host) // a last try for the owed violations
	}
	if !s.frozen {
		s.seal(s.journals(r.host))
	}
	s.mu.Unlock()
	s.closeJournal(s.host)
}

// newNamespaceState writes the attach record and starts the journal of a
// container being attached.
func (r *Registry) newNamespaceState(ns *Namespace, ociConfig []byte) error {
	start, err := procStartTime(ns.Init)
	if err != nil {
		return fmt.Errorf("identity of pid %d: %w", ns.Init, err)
	}
	rec := &ContainerRecord{
		ID:        ns.ID,
		Pid:       ns.Init,
		StartTime: start,
		BootID:    bootID(),
		PidNS:     ns.Pinned.PidNS.Ino,
		UserNS:    ns.Pinned.UserNS.Ino,
		MntNS:     ns.Pinned.MntNS.Ino,
		Attached:  ns.Attached,
	}
	if ociConfig != nil {
		sum := sha256.Sum256(ociConfig)
		rec.Config = hex.EncodeToString(sum[:])
	}
	if err := r.state.createNamespaceState(ns); err != nil {
		return err
	}
	ns.record = rec
	ns.savePolicy = func(text string) error { return r.state.savePolicy(ns, text) }
	ns.storageErr = r.state.failingErr
	return nil
}

// SetMount records where container id's tree is mounted (so a restarted
// daemon mounts a fresh one there).
func (r *Registry) SetMount(id, target string) error {
	ns, ok := r.Get(id)
	if !ok || ns.IsHost() {
		return fmt.Errorf("set mount of %s: %w", id, ErrNotFound)
	}
	if r.state == nil {
		return nil
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.record == nil {
		return nil
	}
	rec := *ns.record
	rec.Mount = target
	if err := r.state.saveRecord(&rec); err != nil {
		return err
	}
	ns.record = &rec
	return nil
}

// Restored is a container brought back by Restore.
type Restored struct {
	NS     *Namespace
	Record ContainerRecord
}

// ErrIdentity is returned when a persisted container's pid now names
// another process (or the machine rebooted).
var ErrIdentity = errors.New("not the process that was attached")

// Restore re-registers every container of the state directory whose init is
// still the same process (pid, start time and boot id as recorded): it pins
// the namespaces again, replays the list from the journal (a torn tail is
// cut and logged with its offset) and the saved policy, and tells the
// observers. The caller mounts fresh trees for them. A container whose init
// is gone is detached: its directory moves to archive/. One whose state can't
// be replayed (a corrupt journal or record) moves to quarantine/ and is not
// restored; the others are not held up by it.
func (r *Registry) Restore() []Restored {
	if r.state == nil {
		return nil
	}
	ids, err := r.state.records()
	if err != nil {
		r.log.WithError(err).Error("restore")
		return nil
	}
	var out []Restored
	for _, id := range ids {
		ns, err := r.restoreOne(id)
		if err != nil {
			continue // logged
		}
		out = append(out, Restored{NS: ns, Record: *ns.record})
	}
	return out
}

func (r *Registry) restoreOne(id string) (*Namespace, error) {
	log := r.log.WithField("id", id)
	start := time.Now()
	rec, err := r.state.readRecord(id)
	if errors.Is(err, os.ErrNotExist) && validID.MatchString(id) && id != HostID {
		// The record is written once the first entries are durable: an
		// attach cut short by a crash, never acknowledged.
		log.WithError(err).Info("restore: attach never completed; archived")
		r.state.moveAside(id, archiveDirName, "attach never completed")
		return nil, err
	}
	if err != nil || !validID.MatchString(id) || id == HostID {
		if err == nil {
			err = ErrInvalidID
		}
		log.WithError(err).Error("restore: unreadable container record")
		r.state.moveAside(id, quarantineName, "unreadable container record")
		return nil, err
	}
	log = log.WithField("pid", rec.Pid)
	if err := sameProcess(rec); err != nil {
		log.WithError(err).Info("restore: container exited while the daemon was down; detached")
		r.state.moveAside(id, archiveDirName, "exited while the daemon was down")
		return nil, err
	}
	pinned, err := nsresolve.Pin(rec.Pid)
	if err == nil && (pinned.PidNS.Ino != rec.PidNS || sameProcess(rec) != nil) {
		// Checked again with the pidfd held: the pid can't be reused now.
		pinned.Close()
		err = fmt.Errorf("pid %d: %w", rec.Pid, ErrIdentity)
	}
	if err != nil {
		log.WithError(err).Info("restore: container gone; detached")
		r.state.moveAside(id, archiveDirName, "gone at restore")
		return nil, err
	}
	jpath := filepath.Join(r.state.nsDir(id), listJournalName)
	ns := r.newContainer(id, rec.Pid, pinned) // not shared until registered below
	j, dmg, err := r.state.replayExpecting(id, jpath, ns.List, true)
	if err != nil {
		pinned.Close()
		log.WithError(err).Error("restore: journal unreadable; container quarantined, not restored")
		r.state.moveAside(id, quarantineName, "unreadable journal: "+err.Error())
		return nil, err
	}
	ns.Attached = rec.Attached
	ns.journal = j
	ns.record = rec
	ns.savePolicy = func(text string) error { return r.state.savePolicy(ns, text) }
	ns.storageErr = r.state.failingErr
	text, saved, err := r.state.readPolicy(id)
	if err == nil && saved {
		var rules policy.Policy
		if rules, err = policy.Parse(text); err == nil {
			ns.setPolicy(rules)
			ns.policyLoaded = true
		}
	}
	if err != nil {
		j.f.Close()
		pinned.Close()
		log.WithError(err).Error("restore: saved policy unreadable; container quarantined, not restored")
		r.state.moveAside(id, quarantineName, "unreadable policy: "+err.Error())
		return nil, err
	}
	r.noteDamage(ns, jpath, dmg)

	r.mu.Lock()
	_, dupID := r.byID[id]
	_, dupNS := r.byPidNS[pinned.PidNS]
	if dupID || dupNS {
		r.mu.Unlock()
		j.f.Close()
		pinned.Close()
		log.Error("restore: already registered")
		return nil, fmt.Errorf("restore %s: %w", id, ErrExists)
	}
	r.byID[id] = ns
	r.byPidNS[pinned.PidNS] = ns
	observers := append([]Observer(nil), r.observers...)
	r.mu.Unlock()
	if err := r.watch.add(pinned.PidFD(), id); err != nil {
		r.remove(ns, false)
		log.WithError(err).Error("restore: watch init")
		return nil, err
	}
	log.WithFields(logrus.Fields{"entries": ns.List.Len(), "policy_saved": saved, "took": time.Since(start).String()}).Info("restored")
	for _, o := range observers {
		o.Attached(ns)
	}
	if !pinned.Alive() {
		go r.initExited(id)
	}
	return ns, nil
}

// sameProcess checks that rec's pid still names the process recorded.
func sameProcess(rec *ContainerRecord) error {
	if b := bootID(); b != "" && rec.BootID != "" && b != rec.BootID {
		return fmt.Errorf("boot id %s, recorded %s: %w", b, rec.BootID, ErrIdentity)
	}
	st, err := procStartTime(rec.Pid)
	if err != nil {
		return fmt.Errorf("pid %d: %w", rec.Pid, ErrNotRunning)
	}
	if st != rec.StartTime {
		return fmt.Errorf("pid %d started at %d, recorded %d: %w", rec.Pid, st, rec.StartTime, ErrIdentity)
	}
	return nil
}

// JournalSyncs returns how many group commits (one write and fsync per
// journal touched) the registry has made, for tests and metrics.
func (r *Registry) JournalSyncs() int {
	if r.state == nil {
		return 0
	}
	r.state.mu.Lock()
	defer r.state.mu.Unlock()
	return r.state.syncs
}

var _ = measurelog.SHA1

// ErrFrozen is returned by Record while the registry is frozen for a
// handover to another daemon process.
var ErrFrozen = errors.New("registry frozen for a handover")

// Freeze prepares a handover of the state directory to a successor daemon
// (imafs upgrade): it waits for the Records in flight, then closes every
// journal; later Records fail with ErrFrozen until Thaw. Lists, policies
// and registrations stay as they are, readable. Without a state directory
// it does nothing.
func (r *Registry) Freeze() {
	if r.state == nil {
		return
	}
	s := r.state
	s.mu.Lock()
	for s.flushing {
		s.cond.Wait()
	}
	if len(s.owed) > 0 {
		s.flush(r.host) // owed violations go to the successor in the journals
	}
	s.frozen = true
	files := []*jfile{s.host}
	for _, ns := range r.Namespaces() {
		if ns.journal != nil {
			files = append(files, ns.journal)
		}
	}
	s.seal(files) // the successor trusts what this daemon checked
	for _, j := range files {
		if !j.closed {
			j.closed = true
			if err := j.f.Close(); err != nil {
				r.log.WithError(err).WithField("journal", j.path).Warn("freeze: close journal")
			}
		}
	}
	s.frozen = true
	s.mu.Unlock()
	r.log.WithField("journals", len(files)).Info("registry frozen: journals closed for a handover")
}

// Thaw undoes Freeze (the handover failed): the journals are opened again
// for appending.
func (r *Registry) Thaw() error {
	if r.state == nil {
		return nil
	}
	s := r.state
	s.mu.Lock()
	defer s.mu.Unlock()
	files := []*jfile{s.host}
	for _, ns := range r.Namespaces() {
		if ns.journal != nil {
			files = append(files, ns.journal)
		}
	}
	var errs []error
	for _, j := range files {
		if !j.closed {
			continue
		}
		nj, err := openJFile(j.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("thaw: %w", err))
			continue
		}
		j.f, j.size, j.prev, j.broken, j.closed = nj.f, nj.size, nj.size, nil, false
	}
	s.frozen = false
	r.log.Info("registry thawed")
	return errors.Join(errs...)
}
