package daemon

import (
	"errors"
	"fmt"
	"slices"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/metrics"
	"github.com/imafs/imafs/mmapsrc"
)

// Enforcing `appraise func=MMAP_CHECK` (docs/mmap-source.md, "Wiring"):
// where the mmap source runs the BPF LSM mechanism and the fanotify engine
// runs, a container whose policy appraises executable mappings gets its
// mount namespace appraised (mmapsrc.Source.SetAppraise); the engine
// appraises each file the rule covers at its open (ld.so opens a library,
// execve its binary, before mapping it) and passes the digests of those that
// verify (mmapSource is its fanotify.MmapAppraiser), which the source allows
// in that mount namespace. A mapping of anything else fails with EACCES and
// is logged and counted as the engine's appraisal denials are.

// MmapUnverifiedCause is the cause of a refused mapping of a file the
// fanotify engine did not appraise at an open (e.g. one opened before the
// policy appraised mappings, or through a mount the engine does not mark).
const MmapUnverifiedCause = "unverified-at-open"

// maxMmapCauses bounds the remembered appraisal failures (per daemon).
const maxMmapCauses = 1 << 14

var _ fanotify.MmapAppraiser = (*mmapSource)(nil)

// mmapCauseKey names a file of a container whose appraisal failed.
type mmapCauseKey struct {
	id       string
	dev, ino uint64
}

// watchOf returns ns's watch (nil when it has none or the source stops).
func (m *mmapSource) watchOf(ns *imans.Namespace) *mmapWatch {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w, ok := m.watches[ns.ID]; ok && w.ns == ns && !m.closing {
		return w
	}
	return nil
}

// Enforces reports whether ns's executable mappings are appraised in the
// kernel (fanotify.MmapAppraiser).
func (m *mmapSource) Enforces(ns *imans.Namespace) bool {
	w := m.watchOf(ns)
	return w != nil && w.enforced.Load()
}

// KernelAlgo is the algorithm the BPF LSM's bpf_ima_file_hash hashes in.
func (m *mmapSource) KernelAlgo() measurelog.Algo {
	m.mu.Lock()
	src := m.src
	m.mu.Unlock()
	if src != nil {
		if a, err := measurelog.ParseAlgo(src.KernelAlgo()); err == nil {
			return a
		}
	}
	return measurelog.SHA256
}

// Verified allows a verified file's digest in the kernel's algorithm (the
// only one the LSM looks up) in ns's mount namespace.
func (m *mmapSource) Verified(ns *imans.Namespace, dev, ino uint64, algos []measurelog.Algo, digests [][]byte) bool {
	w := m.watchOf(ns)
	if w == nil || !w.enforced.Load() {
		return false
	}
	algo := m.KernelAlgo()
	i := slices.Index(algos, algo)
	if i < 0 || i >= len(digests) {
		m.log.WithField("id", ns.ID).WithField("algo", algo).Warn("mmap source: a verified file was not hashed in the kernel's algorithm")
		return false
	}
	if err := w.src.Allow(w.mntns, algo.String(), digests[i]); err != nil {
		m.log.WithError(err).WithField("id", ns.ID).Warn("mmap source: allow a verified digest")
		return false
	}
	m.mu.Lock()
	delete(m.causes, mmapCauseKey{ns.ID, dev, ino}) // a new version verified: its old cause is stale
	m.mu.Unlock()
	return true
}

// Failed remembers why a file of ns failed appraisal, for the log line of
// its refused mapping.
func (m *mmapSource) Failed(ns *imans.Namespace, dev, ino uint64, cause string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.causes == nil || len(m.causes) >= maxMmapCauses {
		m.causes = map[mmapCauseKey]string{}
	}
	m.causes[mmapCauseKey{ns.ID, dev, ino}] = cause
}

// Invalidated drops the digests allowed in ns's mount namespace: its policy
// or keys changed, the engine appraises every file again at its next open.
func (m *mmapSource) Invalidated(ns *imans.Namespace) {
	w := m.watchOf(ns)
	if w == nil || !w.enforced.Load() {
		return
	}
	if err := w.src.DisallowAll(w.mntns); err != nil {
		m.log.WithError(err).WithField("id", ns.ID).Warn("mmap source: drop the allowed digests")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.causes {
		if k.id == ns.ID {
			delete(m.causes, k)
		}
	}
}

// enforce turns the kernel's appraisal of w's mount namespace on or off
// after a policy load (refresh). On: when the mechanism can deny and the
// fanotify engine runs to verify the files at their open; otherwise the
// error says why it is not enforced.
func (m *mmapSource) enforce(w *mmapWatch, on bool) error {
	if !on {
		if w.enforced.Swap(false) && !m.sharedEnforced(w) {
			return w.src.SetAppraise(w.mntns, false)
		}
		return nil
	}
	if w.enforced.Load() {
		return nil
	}
	if !w.src.Mechanism().CanDeny() {
		return fmt.Errorf("%w (mechanism %s)", mmapsrc.ErrCannotDeny, w.src.Mechanism())
	}
	eng := m.fan.engine()
	if eng == nil {
		return errors.New("no fanotify engine runs to verify the files at their open")
	}
	if err := w.src.SetAppraise(w.mntns, true); err != nil {
		return err
	}
	w.enforced.Store(true)
	// Files opened before were not appraised for MMAP_CHECK (and may
	// carry ignore marks): the engine evaluates every file again.
	eng.Invalidate(w.ns)
	return nil
}

// sharedEnforced reports whether another watched container with w's mount
// namespace is appraised.
func (m *mmapSource) sharedEnforced(w *mmapWatch) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.watches {
		if o != w && o.mntns == w.mntns && o.enforced.Load() {
			return true
		}
	}
	return false
}

// denied logs and counts a mapping the kernel refused (an appraisal
// failure, as the fanotify engine logs and counts its denials; the kernel
// logs an integrity audit message "appraise_data" with the cause).
func (m *mmapSource) denied(w *mmapWatch, ev *mmapsrc.Event, log *logrus.Entry) {
	m.mu.Lock()
	cause, ok := m.causes[mmapCauseKey{w.ns.ID, ev.Dev, ev.Ino}]
	m.mu.Unlock()
	if !ok {
		cause = MmapUnverifiedCause
	}
	m.refused.Add(1)
	metrics.Denied(w.ns.ID, "mmap", cause)
	log.WithFields(logrus.Fields{"cause": cause, "op": "appraise_data", "hook": "MMAP_CHECK",
		"hash": fmt.Sprintf("%s:%x", ev.DigestAlgo, ev.Digest)}).Warn("mmap source: appraisal failed, executable mapping refused (EACCES)")
}
