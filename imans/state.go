package imans

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/internal/cputime"
	"github.com/imafs/imafs/internal/fsync"
	"github.com/imafs/imafs/measurelog"
)

// Layout of the state directory (Options.StateDir):
//
//	host.journal                    the host's list: every recorded entry, in record order
//	ns/ID/list.journal              container ID's list
//	ns/ID/policy                    its policy after the last successful load (absent: default)
//	ns/ID/container.json            its attach record (ContainerRecord)
//	archive/ID.UNIXNANO/            a detached container's directory, kept for the operator
//	quarantine/ID.UNIXNANO/         a container directory that could not be replayed
//
// Journals are binary-list records (sha1 bank, template data intact), as
// measurelog.OpenJournal reads them.
const (
	hostJournalName = "host.journal"
	nsDirName       = "ns"
	archiveDirName  = "archive"
	quarantineName  = "quarantine"
	listJournalName = "list.journal"
	policyFileName  = "policy"
	recordFileName  = "container.json"
)

// ContainerRecord is what the state directory keeps of an attached container
// so that a restarted daemon can find it again and be sure it is the same
// process: the pid alone could name another process by now, pid plus start
// time (field 22 of /proc/PID/stat) plus boot id can't.
type ContainerRecord struct {
	ID        string    `json:"id"`
	Pid       int       `json:"pid"`
	StartTime uint64    `json:"start_time"` // clock ticks after boot
	BootID    string    `json:"boot_id"`
	PidNS     uint64    `json:"pidns"` // inode of the pinned pid namespace
	UserNS    uint64    `json:"userns"`
	MntNS     uint64    `json:"mntns"`
	Config    string    `json:"config_sha256,omitempty"` // digest of the OCI config measured at attach
	Mount     string    `json:"mount,omitempty"`         // mount target in the container's mount namespace
	Attached  time.Time `json:"attached"`
}

// replayProgressEvery is how many replayed entries pass between two
// progress lines in the log (a variable for tests).
var replayProgressEvery = 200000

// jfile is one journal file open for appending. A write that fails is cut
// back off the file (size is the length of its durable records), so a
// later write starts right after the last acknowledged record: a full or
// failing disk fails the records of that moment, never the journal.
type jfile struct {
	path   string
	f      *os.File
	buf    []byte
	size   int64 // bytes of durable records: where the next write goes
	prev   int64 // size before the last successful write (rollback)
	broken error // a failed write could not be cut back; retried first next time
	closed bool

	failing atomic.Pointer[string] // the last write's error while writes fail; nil once one succeeds
}

// pending is one Record waiting for its journals.
type pending struct {
	ns   *Namespace
	e    *measurelog.Entry
	host *measurelog.Entry // the host list's form of e (Item.Host), nil: e
	err  error
	done bool
	owed bool  // a violation whose earlier write failed (counted in nowed)
	off  int64 // its record's offset in this batch's write to its namespace's journal
	hoff int64 // and in the host journal's
}

// hostEntry is the entry the host list takes for p.
func (p *pending) hostEntry() *measurelog.Entry {
	if p.host != nil {
		return p.host
	}
	return p.e
}

// state journals every recorded entry (group commit: concurrent Records
// share writes and fsyncs) and applies it to the in-memory lists only once
// it is durable, in record order: no reader sees an entry a crash could
// take back.
type state struct {
	dir  string
	log  *logrus.Logger
	reg  *Registry
	host *jfile

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []*pending
	owed     []*pending // violations whose write failed: written before anything later
	retrying bool       // the retry loop runs
	flushing bool
	frozen   bool // Freeze: a successor daemon owns the journals
	syncs    int
	failures uint64       // batches that failed on a write error
	nfailing atomic.Int64 // journals whose last write failed
	nowed    atomic.Int64 // owed violations not yet in their lists (queued or being written)
	lastFail atomic.Pointer[error]
}

// ErrStorage wraps a Record that failed because the state directory could
// not be written (full disk, I/O error): nothing of it was acknowledged.
var ErrStorage = errors.New("state directory write failed")

// retryEvery is how often, while journal writes fail, the daemon tries
// again by itself (owed violations, a probe write) (a variable for tests).
var retryEvery = time.Second

func newState(dir string, log *logrus.Logger, reg *Registry) (*state, error) {
	for _, d := range []string{dir, filepath.Join(dir, nsDirName), filepath.Join(dir, archiveDirName), filepath.Join(dir, quarantineName)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	s := &state{dir: dir, log: log, reg: reg}
	s.cond = sync.NewCond(&s.mu)
	return s, nil
}

// replayJournal checks the journal at path (cutting a torn tail, which
// measurelog logs with its offset), lists its entries in list (empty,
// journal-backed: it reads the records from the journal from then on) and
// opens it for appending. A corrupt record is an error: the caller decides
// what to do with the file.
func (s *state) replayJournal(what, path string, list *measurelog.List) (*jfile, error) {
	start, cpu := time.Now(), cputime.Now()
	j, err := measurelog.ReplayJournal(path, s.log.WithFields(logrus.Fields{"journal": path, "list": what}), list, replayProgressEvery)
	if j == nil {
		return nil, err
	}
	// A corrupt record has been saved to path+".corrupt" and cut: the
	// file is appendable again; err tells the caller.
	if cerr := j.Close(); cerr != nil {
		return nil, cerr
	}
	jf, oerr := openJFile(path)
	if oerr != nil {
		return nil, oerr
	}
	if n := list.Len(); n > 0 {
		s.log.WithFields(logrus.Fields{"list": what, "entries": n, "took": time.Since(start).String(),
			"cpu": (cputime.Now() - cpu).String()}).Info("journal replayed")
	}
	return jf, err
}

// seal seals the open journals that are in order (no write failing or
// left to cut back), so that the next daemon's replay trusts their
// records' digests (measurelog.SealJournal); s.mu is held and no flush
// runs. A seal that cannot be written only costs the next start the
// checks.
func (s *state) seal(files []*jfile) {
	for _, j := range files {
		if j == nil || j.closed || j.broken != nil || j.failing.Load() != nil || j.size == 0 {
			continue
		}
		if err := measurelog.SealJournal(j.path, j.size); err != nil {
			s.log.WithError(err).WithField("journal", j.path).Warn("seal journal: the next start checks it all")
		}
	}
}

// newList returns an empty journal-backed list, read from the journal at
// path once it is opened (SetJournal).
func newList() *measurelog.List {
	return measurelog.NewJournalList(nil, measurelog.SHA1, measurelog.SHA256)
}

// openJFile opens an existing journal for appending at its end.
func openJFile(path string) (*jfile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	return &jfile{path: path, f: f, size: fi.Size()}, nil
}

func (s *state) nsDir(id string) string { return filepath.Join(s.dir, nsDirName, id) }

// commitAll journals every item's entry for its namespace (and the host)
// and, once durable, appends it to the lists. The items are queued together
// so that one flush (one write and fsync per journal) takes them all, in
// order, with whatever concurrent commits queued too. Once every item is
// done it returns the index and error of the first that failed, if any.
func (s *state) commitAll(host *Namespace, items []Item) (int, error) {
	ps := make([]pending, len(items))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frozen {
		return 0, ErrFrozen
	}
	for i, it := range items {
		ps[i] = pending{ns: it.NS, e: it.Entry, host: it.Host}
		s.queue = append(s.queue, &ps[i])
	}
	for i := range ps {
		for !ps[i].done {
			if !s.flushing {
				s.flush(host)
				continue
			}
			s.cond.Wait()
		}
	}
	for i := range ps {
		if ps[i].err != nil {
			return i, ps[i].err
		}
	}
	return -1, nil
}

func (s *state) isFrozen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frozen
}

// closeJournal closes j once no flush is using it; later records fail.
func (s *state) closeJournal(j *jfile) {
	if j == nil {
		return
	}
	s.mu.Lock()
	for s.flushing {
		s.cond.Wait()
	}
	if !j.closed {
		j.closed = true
		if j.failing.Swap(nil) != nil {
			s.nfailing.Add(-1)
		}
		if err := j.f.Close(); err != nil {
			s.log.WithError(err).WithField("journal", j.path).Warn("close journal")
		}
	}
	s.mu.Unlock()
}

// createNamespaceState starts a fresh state directory for a container
// being attached: a directory left by an earlier container of the same id
// (one the daemon could not restore) is archived first.
func (s *state) createNamespaceState(ns *Namespace) error {
	dir := s.nsDir(ns.ID)
	if _, err := os.Lstat(dir); err == nil {
		s.moveAside(ns.ID, archiveDirName, "stale state of an earlier container with this id")
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("state of %s: %w", ns.ID, err)
	}
	// The attach record is written once the list's first entries are
	// durable (Attach): a record next to an empty or missing journal is
	// damage, never an attach cut short.
	path := filepath.Join(dir, listJournalName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("state of %s: %w", ns.ID, err)
	}
	if err := fsync.Dir(dir); err != nil {
		f.Close()
		return fmt.Errorf("state of %s: %w", ns.ID, err)
	}
	rf, err := os.Open(path)
	if err != nil {
		f.Close()
		return fmt.Errorf("state of %s: %w", ns.ID, err)
	}
	ns.List.SetJournal(rf) // ns.List is empty and journal-backed (Attach)
	ns.journal = &jfile{path: path, f: f}
	return nil
}

// moveAside moves container id's state directory to archive/ or
// quarantine/ under a unique name and returns the new path.
func (s *state) moveAside(id, where, why string) string {
	src := s.nsDir(id)
	dst := filepath.Join(s.dir, where, id+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
	fields := logrus.Fields{"id": id, "from": src, "to": dst, "reason": why}
	if err := os.Rename(src, dst); err != nil {
		s.log.WithError(err).WithFields(fields).Error("move container state aside")
		return ""
	}
	if err := fsync.Dir(filepath.Join(s.dir, nsDirName)); err != nil {
		s.log.WithError(err).Warn("sync state dir")
	}
	if where == quarantineName {
		s.log.WithFields(fields).Error("container state quarantined")
	} else {
		s.log.WithFields(fields).Info("container state archived")
	}
	return dst
}

// savePolicy makes ns's policy durable (write, fsync, rename, fsync dir).
func (s *state) savePolicy(ns *Namespace, text string) error {
	if err := writeFileSync(filepath.Join(s.nsDir(ns.ID), policyFileName), []byte(text)); err != nil {
		return fmt.Errorf("save policy of %s: %w: %w", ns.ID, ErrStorage, err)
	}
	return nil
}

// saveRecord rewrites container id's attach record.
func (s *state) saveRecord(rec *ContainerRecord) error {
	if err := writeFileSync(filepath.Join(s.nsDir(rec.ID), recordFileName), mustJSON(rec)); err != nil {
		return fmt.Errorf("save record of %s: %w", rec.ID, err)
	}
	return nil
}

// records lists the container directories found under ns/.
func (s *state) records() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, nsDirName))
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

func (s *state) readRecord(id string) (*ContainerRecord, error) {
	data, err := os.ReadFile(filepath.Join(s.nsDir(id), recordFileName))
	if err != nil {
		return nil, fmt.Errorf("record of %s: %w", id, err)
	}
	var rec ContainerRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("record of %s: %w", id, err)
	}
	if rec.ID != id || rec.Pid <= 0 {
		return nil, fmt.Errorf("record of %s: names %q pid %d", id, rec.ID, rec.Pid)
	}
	return &rec, nil
}

// readPolicy returns the saved policy text of id, ok=false when none was
// saved (the default policy is active).
func (s *state) readPolicy(id string) (string, bool, error) {
	data, err := os.ReadFile(filepath.Join(s.nsDir(id), policyFileName))
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("policy of %s: %w", id, err)
	}
	return string(data), true, nil
}

func mustJSON(v any) []byte {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(data, '\n')
}

// writeFileSync replaces path with data atomically and durably.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := fsync.WriteFile(tmp, data); err != nil {
		return err // (removed: a full disk leaves nothing half-written)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return fsync.Dir(filepath.Dir(path))
}

// procStartTime returns field 22 (starttime) of /proc/PID/stat.
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// comm (field 2) may hold spaces and parentheses: fields count from the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

var bootIDOnce struct {
	sync.Once
	id string
}

func bootID() string {
	bootIDOnce.Do(func() {
		data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err == nil {
			bootIDOnce.id = strings.TrimSpace(string(data))
		}
	})
	return bootIDOnce.id
}
