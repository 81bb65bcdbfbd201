package imans

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/internal/fsync"
	"github.com/imafs/imafs/measurelog"
)

// A full or failing state disk: every journal write that fails is cut back
// off its file, the Records of that batch fail (ErrStorage; nothing of them
// is acknowledged), and the journals stay usable. A violation entry whose
// write fails is owed: kept in memory and written before anything later
// once writes succeed again, which a retry loop tries by itself (every
// retryEvery) while anything is owed or a journal's last write failed.

// flush writes, syncs and applies the owed violations and the queue, in
// that order; s.mu is held on entry and exit but not during I/O. Only one
// flush runs at a time, so lists are appended in record order.
func (s *state) flush(host *Namespace) {
	s.flushing = true
	batch := append(s.owed, s.queue...)
	s.owed, s.queue = nil, nil
	s.mu.Unlock()

	live := make([]*pending, 0, len(batch))
	for _, p := range batch {
		if j := p.ns.journal; j == nil || j.closed {
			p.err = fmt.Errorf("record in %s: %w", p.ns.ID, ErrDetached)
			continue
		}
		live = append(live, p)
	}
	failed := s.commitBatch(host, live)

	s.mu.Lock()
	s.syncs++
	for _, p := range batch {
		if p.err != nil && errors.Is(p.err, ErrStorage) && p.e.Violation {
			// A violation must reach the list: written once writes work.
			s.owed = append(s.owed, &pending{ns: p.ns, e: p.e, host: p.host, owed: true})
			if !p.owed {
				s.nowed.Add(1)
			}
		} else if p.owed {
			// Listed (commitBatch appended it) or its namespace is gone.
			s.nowed.Add(-1)
		}
		p.done = true
	}
	if failed {
		s.failures++
		if !s.retrying {
			s.retrying = true
			go s.retryLoop(host)
		}
	}
	s.flushing = false
	s.cond.Broadcast()
}

// commitBatch journals items (the host's journal first, then the
// containers' in parallel) and applies them to the lists once durable. When
// a container's journal fails, the batch is cut back off every journal —
// the containers' first, so a crash never leaves a container record the
// host's journal lacks — and written again without that container's items,
// which fail. It reports whether anything failed.
func (s *state) commitBatch(host *Namespace, items []*pending) (failed bool) {
	for len(items) > 0 {
		var files []*jfile
		for _, p := range items {
			rec := p.e.AppendBinary(nil, measurelog.SHA1)
			if j := p.ns.journal; p.ns != host {
				if len(j.buf) == 0 {
					files = append(files, j)
				}
				p.off = int64(len(j.buf))
				j.buf = append(j.buf, rec...)
				if p.host != nil {
					rec = p.host.AppendBinary(rec[:0], measurelog.SHA1)
				}
			}
			p.hoff = int64(len(s.host.buf))
			s.host.buf = append(s.host.buf, rec...)
		}
		if err := s.write(s.host); err != nil {
			for _, j := range files {
				j.buf = j.buf[:0]
			}
			for _, p := range items {
				p.err = storageError(p.ns, err)
			}
			return true
		}
		errs := make([]error, len(files))
		var wg sync.WaitGroup
		for i, j := range files {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = s.write(j) }()
		}
		wg.Wait()
		bad := map[*jfile]error{}
		for i, j := range files {
			if errs[i] != nil {
				bad[j] = errs[i]
			}
		}
		if len(bad) == 0 {
			// Durable: listed at their records' offsets (j.prev: where
			// this batch's write started).
			for _, p := range items {
				if p.ns == host {
					host.List.AppendAt(p.e, s.host.prev+p.hoff)
					continue
				}
				p.ns.List.AppendAt(p.e, p.ns.journal.prev+p.off)
				host.List.AppendAt(p.hostEntry(), s.host.prev+p.hoff)
			}
			return failed
		}
		failed = true
		for i, j := range files {
			if errs[i] == nil {
				s.rollback(j)
			}
		}
		s.rollback(s.host)
		keep := items[:0]
		for _, p := range items {
			if err, ok := bad[p.ns.journal]; ok {
				p.err = storageError(p.ns, err)
			} else {
				keep = append(keep, p)
			}
		}
		items = keep
	}
	return failed
}

func storageError(ns *Namespace, err error) error {
	return fmt.Errorf("record in %s: %w: %w", ns.ID, ErrStorage, err)
}

// write appends j.buf at j's durable end and fsyncs it. On failure the
// bytes are cut back off (or that is retried first next time) and j is
// marked failing; j.buf is emptied either way.
func (s *state) write(j *jfile) error {
	buf := j.buf
	j.buf = j.buf[:0]
	err := j.repair()
	if err == nil {
		_, err = j.f.WriteAt(buf, j.size)
		if err == nil {
			err = j.f.Sync()
		}
		if err != nil {
			j.cutBack(j.size)
		}
	}
	if err != nil {
		err = fmt.Errorf("journal %s: %w", j.path, err)
		msg := err.Error()
		s.lastFail.Store(&err)
		if j.failing.Swap(&msg) == nil {
			s.nfailing.Add(1)
			s.log.WithError(err).WithFields(logrus.Fields{"journal": j.path, "records_bytes": len(buf)}).
				Error("journal write failed: the records of this batch are not acknowledged; retrying while it fails")
		}
		return err
	}
	j.prev, j.size = j.size, j.size+int64(len(buf))
	if j.failing.Swap(nil) != nil {
		s.nfailing.Add(-1)
		s.log.WithField("journal", j.path).Warn("journal writes succeed again")
	}
	return nil
}

// rollback cuts j's last successful write back off (its batch failed in
// another journal).
func (s *state) rollback(j *jfile) {
	j.size = j.prev
	j.cutBack(j.size)
}

// cutBack truncates j to size durably; when that fails, the next write
// tries again first.
func (j *jfile) cutBack(size int64) {
	err := j.f.Truncate(size)
	if err == nil {
		err = j.f.Sync()
	}
	j.broken = err
}

// repair finishes a cut back that failed.
func (j *jfile) repair() error {
	if j.broken == nil {
		return nil
	}
	j.cutBack(j.size)
	if j.broken != nil {
		return fmt.Errorf("cut back to %d bytes: %w", j.size, j.broken)
	}
	return nil
}

// retryLoop runs while writes fail: it writes the owed violations and,
// when nothing is owed, probes the disk and repairs the journals, so the
// daemon recovers (and stops reporting the failure) without a new event.
func (s *state) retryLoop(host *Namespace) {
	for {
		time.Sleep(retryEvery)
		s.mu.Lock()
		if s.frozen || s.host.closed {
			s.retrying = false
			s.mu.Unlock()
			return
		}
		if len(s.owed) > 0 && !s.flushing {
			s.flush(host)
		} else if len(s.owed) == 0 && !s.flushing {
			s.probe(host)
		}
		if len(s.owed) == 0 && !s.anyFailing(host) {
			s.retrying = false
			s.mu.Unlock()
			s.log.Info("state directory writable again: every journal is in order")
			return
		}
		s.mu.Unlock()
	}
}

// journals returns the open journals (s.mu held).
func (s *state) journals(host *Namespace) []*jfile {
	files := []*jfile{s.host}
	for _, ns := range s.reg.Namespaces() {
		if j := ns.journal; j != nil && !j.closed && j != s.host {
			files = append(files, j)
		}
	}
	return files
}

func (s *state) anyFailing(host *Namespace) bool {
	for _, j := range s.journals(host) {
		if j.failing.Load() != nil {
			return true
		}
	}
	return false
}

// probe checks that the state directory takes a write again (s.mu held, no
// flush running) and then clears the failing journals, repaired.
func (s *state) probe(host *Namespace) {
	failing := false
	for _, j := range s.journals(host) {
		failing = failing || j.failing.Load() != nil
	}
	if !failing {
		return
	}
	path := filepath.Join(s.dir, ".probe")
	err := fsync.WriteFile(path, make([]byte, 4096))
	os.Remove(path)
	if err != nil {
		return
	}
	for _, j := range s.journals(host) {
		if j.failing.Load() != nil && j.repair() == nil && j.failing.Swap(nil) != nil {
			s.nfailing.Add(-1)
			s.log.WithField("journal", j.path).Warn("journal writable again")
		}
	}
}

// Degraded returns why ns's list cannot be trusted as complete or why its
// measurements currently fail ("" when neither): its journal was found
// damaged (until the operator removes the quarantined original), the
// state directory fails writes to its journal or the host's, or a violation
// owed since writes failed is not in its list yet.
func (r *Registry) Degraded(ns *Namespace) string {
	var reasons []string
	if d := ns.damaged.Load(); d != nil {
		reasons = append(reasons, *d)
	}
	if r.state != nil {
		failing := ""
		for _, j := range []*jfile{ns.journal, r.state.host} {
			if j == nil {
				continue
			}
			if f := j.failing.Load(); f != nil {
				failing = "storage: " + *f
				break
			}
		}
		if failing == "" && r.state.nfailing.Load() > 0 {
			// Another journal fails: the disk is shared, so is the risk.
			failing = "storage: the state directory fails writes"
		}
		if n := r.state.nowed.Load(); failing == "" && n > 0 {
			// Writes work again but a violation owed since they failed
			// is not in its list yet: the list is not complete.
			failing = fmt.Sprintf("storage: %d violation entries not yet written", n)
		}
		if failing != "" {
			reasons = append(reasons, failing)
		}
	}
	return strings.Join(reasons, "; ")
}

// failingErr returns the state directory's last write error while a
// journal fails, else nil.
func (s *state) failingErr() error {
	if s.nfailing.Load() == 0 {
		return nil
	}
	if e := s.lastFail.Load(); e != nil {
		return fmt.Errorf("%w: %w", ErrStorage, *e)
	}
	return ErrStorage
}

// StorageError returns an error wrapping ErrStorage and the errno (e.g.
// ENOSPC) while the state directory fails writes, else nil: a policy
// write can be refused at write(2) instead of at close(2).
func (n *Namespace) StorageError() error {
	if n.storageErr == nil {
		return nil
	}
	return n.storageErr()
}

// StorageFailures returns how many journal batches failed on a write error
// since the daemon started (a metric).
func (r *Registry) StorageFailures() uint64 {
	if r.state == nil {
		return 0
	}
	r.state.mu.Lock()
	defer r.state.mu.Unlock()
	return r.state.failures
}
