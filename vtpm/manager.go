package vtpm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/measurelog"
)

// ErrUnknownNamespace is returned for a namespace the manager has no
// vTPM for.
var ErrUnknownNamespace = errors.New("no vTPM for this namespace")

// ManagerOptions configure the daemon's vTPMs (`imafs serve --vtpm swtpm`).
type ManagerOptions struct {
	// StateDir holds one state directory per namespace
	// (e.g. /var/lib/imafs/vtpm).
	StateDir string
	// SocketDir holds one short socket directory per namespace
	// (e.g. /run/imafs/vtpm); StateDir if empty.
	SocketDir string
	// Host, if set, binds every namespace's attestation key (--tpm).
	Host *HostAttester
	// Binary is the swtpm executable ("swtpm" if empty).
	Binary string
	// Log receives lifecycle messages; logrus's standard logger if nil.
	Log logrus.FieldLogger
}

// Manager runs one swtpm per namespace for the daemon: started on attach
// (or at start-up for every namespace restored from the journal), kept equal
// to the namespace's list by Follow, restarted and replayed if it dies,
// stopped on detach. Its methods are safe for concurrent use.
type Manager struct {
	opts ManagerOptions
	log  logrus.FieldLogger

	mu  sync.Mutex
	nss map[string]*managed
}

// managed is one namespace's vTPM and its follower.
type managed struct {
	id     string
	list   WaitingSource
	cancel context.CancelFunc
	done   chan struct{} // closed when the follower has stopped

	mu  sync.Mutex
	tpm *SWTPM // nil while restarting
	err error  // why the vTPM is down, if it is
}

// NewManager returns a manager with no namespaces.
func NewManager(opts ManagerOptions) (*Manager, error) {
	if opts.StateDir == "" {
		return nil, errors.New("vtpm manager: no state directory")
	}
	if opts.SocketDir == "" {
		opts.SocketDir = opts.StateDir
	}
	log := opts.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Manager{opts: opts, log: log, nss: map[string]*managed{}}, nil
}

// dirName is a namespace's directory name: the ID itself when it is a
// plain name, else a hash of it (no ID can escape StateDir).
func dirName(id string) string {
	ok := id != "" && id != "." && id != ".." && len(id) <= 100
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			ok = false
		}
	}
	if ok {
		return id
	}
	h := sha256.Sum256([]byte(id))
	return "id-" + hex.EncodeToString(h[:16])
}

// socketDirName is short, so that sockets fit in sun_path.
func socketDirName(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:8])
}

func (m *Manager) swtpmOptions(id string, list EntrySource) SWTPMOptions {
	return SWTPMOptions{
		ID:        id,
		StateDir:  filepath.Join(m.opts.StateDir, dirName(id)),
		SocketDir: filepath.Join(m.opts.SocketDir, socketDirName(id)),
		Binary:    m.opts.Binary,
		List:      list,
		Host:      m.opts.Host,
		Log:       m.log,
	}
}

// Attach starts namespace id's vTPM; in the background it replays the list
// (restored from the journal, or a new container's first entries) and
// then follows it.
func (m *Manager) Attach(id string, list WaitingSource) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.nss[id]; dup {
		return fmt.Errorf("vtpm attach %q: already attached", id)
	}
	v, err := m.start(id, list)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ns := &managed{id: id, list: list, cancel: cancel, done: make(chan struct{}), tpm: v}
	m.nss[id] = ns
	go m.follow(ctx, ns)
	return nil
}

// start starts a swtpm. The follower replays the list into it in the
// background (a journal of 100k entries takes ~10-20 s of swtpm round
// trips, which must not hold up the daemon's start); a Quote meanwhile
// catches up first.
func (m *Manager) start(id string, list WaitingSource) (*SWTPM, error) {
	v, err := StartSWTPM(m.swtpmOptions(id, list))
	if err != nil {
		return nil, fmt.Errorf("vtpm attach %q: %w", id, err)
	}
	return v, nil
}

// follow runs Follow; when the vTPM fails (swtpm died), it restarts it on
// the same state directory and replays the list, backing off up to 30 s.
func (m *Manager) follow(ctx context.Context, ns *managed) {
	defer close(ns.done)
	backoff := 100 * time.Millisecond
	for {
		ns.mu.Lock()
		v := ns.tpm
		ns.mu.Unlock()
		if v != nil {
			// Follow until the context ends or the swtpm dies (noticed at
			// once, not at the next entry).
			fctx, fcancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-v.Exited():
					fcancel()
				case <-fctx.Done():
				}
			}()
			err := v.Follow(fctx, ns.list)
			fcancel()
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, context.Canceled) {
				err = fmt.Errorf("swtpm pid %d exited", v.Pid())
			}
			m.log.WithFields(logrus.Fields{"ns": ns.id, "error": err}).Error("vtpm failed, restarting it")
			ns.mu.Lock()
			ns.tpm, ns.err = nil, err
			ns.mu.Unlock()
			v.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		nv, err := m.start(ns.id, ns.list)
		ns.mu.Lock()
		if err == nil {
			ns.tpm, ns.err = nv, nil
			backoff = 100 * time.Millisecond
			m.log.WithField("ns", ns.id).Info("vtpm restarted and replayed")
		} else {
			ns.err = err
			backoff = min(2*backoff, 30*time.Second)
		}
		ns.mu.Unlock()
	}
}

// get returns namespace id's running vTPM.
func (m *Manager) get(id string) (*SWTPM, error) {
	m.mu.Lock()
	ns, ok := m.nss[id]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("vtpm %q: %w", id, ErrUnknownNamespace)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.tpm == nil {
		return nil, fmt.Errorf("vtpm %q is down (restarting): %v", id, ns.err)
	}
	return ns.tpm, nil
}

// Quote returns namespace id's attestation bundle for nonce. It first
// extends whatever the follower has not yet, so the bundle covers the whole
// list as of the call.
func (m *Manager) Quote(id string, nonce []byte) (*Bundle, error) {
	v, err := m.get(id)
	if err != nil {
		return nil, err
	}
	if _, err := v.CatchUp(); err != nil {
		return nil, err
	}
	return v.Quote(nonce)
}

// PCR reads a PCR of namespace id's vTPM. It holds the replay of a prefix
// of the list, the whole list once the follower has caught up: `imafs ps`
// should report the list's own PCRs and may use this as a cross-check.
func (m *Manager) PCR(id string, bank measurelog.Algo, index int) ([]byte, error) {
	v, err := m.get(id)
	if err != nil {
		return nil, err
	}
	return v.TPM().ReadPCR(bank, index)
}

// IDs lists the namespaces with a vTPM.
func (m *Manager) IDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.nss))
	for id := range m.nss {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Detach stops namespace id's vTPM for good and removes its state: the
// container is gone, and a container started again under the same ID is a
// new instance with a new list and a new attestation key.
func (m *Manager) Detach(id string) error {
	m.mu.Lock()
	ns, ok := m.nss[id]
	delete(m.nss, id)
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("vtpm detach %q: %w", id, ErrUnknownNamespace)
	}
	m.stop(ns)
	opts := m.swtpmOptions(id, nil)
	var errs []error
	for _, d := range []string{opts.StateDir, opts.SocketDir} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vtpm detach %q: %w", id, err)
	}
	return nil
}

func (m *Manager) stop(ns *managed) {
	ns.cancel()
	<-ns.done
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.tpm != nil {
		ns.tpm.Close()
		ns.tpm = nil
	}
}

// Close stops every vTPM and keeps their state (daemon shutdown: the next
// daemon attaches the namespaces again and replays their journals).
func (m *Manager) Close() error {
	m.mu.Lock()
	nss := m.nss
	m.nss = map[string]*managed{}
	m.mu.Unlock()
	for _, ns := range nss {
		m.stop(ns)
	}
	return nil
}
