package kernelsrc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
)

// Kernel paths of the imafs series.
const (
	DefaultListPath       = "/sys/kernel/security/ima/binary_runtime_measurements"
	DefaultNamespacesPath = "/sys/kernel/security/ima/namespaces"
)

// Registry is what a Source needs of *imans.Registry.
type Registry interface {
	Host() *imans.Namespace
	Get(id string) (*imans.Namespace, bool)
	RecordAll(items []imans.Item) error
}

var _ Registry = (*imans.Registry)(nil)
var _ imans.Observer = (*Source)(nil)

// Options configure a Source. Zero values select the defaults.
type Options struct {
	ListPath       string        // kernel binary list, sha1 bank (DefaultListPath)
	NamespacesPath string        // kernel registration file (DefaultNamespacesPath)
	MinInterval    time.Duration // poll interval after new entries (50ms)
	MaxInterval    time.Duration // poll interval when idle (1s)
	// KeepBootAggregate also records the kernel's boot_aggregate entry in
	// the host list. By default it is left out: the registry starts the
	// host list with a boot_aggregate of its own.
	KeepBootAggregate bool
	// CursorPath, when set, is a file in which the Source remembers how many
	// entries of this boot's kernel list it has recorded, so that a
	// restarted daemon resumes after them instead of recording them again.
	CursorPath string
	// BootIDPath names the current boot (DefaultBootIDPath).
	BootIDPath string
	// ContainerTemplate is how containers' lists render the kernel's
	// entries: ContainerNG (the default, see ContainerView) or ContainerNS
	// (unchanged). The host list always has them unchanged.
	ContainerTemplate string
	Log               logrus.FieldLogger
}

// Available reports whether the running kernel has the imafs series: its
// namespaces registration file exists.
func Available(namespacesPath string) bool {
	if namespacesPath == "" {
		namespacesPath = DefaultNamespacesPath
	}
	_, err := os.Stat(namespacesPath)
	return err == nil
}

// Source tails the kernel's list into a Registry and registers attached
// containers with the kernel.
type Source struct {
	reg  Registry
	opts Options
	log  logrus.FieldLogger

	// writeNS writes one command to the kernel's namespaces file.
	writeNS func(cmd string) error
	// nsFD returns a file descriptor naming ns's pid namespace (an nsfs
	// fd or a pidfd), valid until release is called.
	nsFD func(ns *imans.Namespace) (fd int, release func(), err error)

	mu         sync.Mutex
	registered map[string]bool // container IDs registered with the kernel by us

	// tags maps the ns field of the kernel's entries ("label:id") to the
	// container whose registration it names; learnt from the kernel's
	// registration records. Only the tail goroutine uses it.
	tags map[string]string

	entries atomic.Uint64 // kernel entries read
	foreign atomic.Uint64 // tagged with a label no attached container has
}

// New returns a Source for reg; call Run to start tailing and add it to the
// registry with AddObserver.
func New(reg Registry, opts Options) *Source {
	if opts.ListPath == "" {
		opts.ListPath = DefaultListPath
	}
	if opts.NamespacesPath == "" {
		opts.NamespacesPath = DefaultNamespacesPath
	}
	if opts.MinInterval <= 0 {
		opts.MinInterval = 50 * time.Millisecond
	}
	if opts.MaxInterval < opts.MinInterval {
		opts.MaxInterval = time.Second
		if opts.MaxInterval < opts.MinInterval {
			opts.MaxInterval = opts.MinInterval
		}
	}
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	s := &Source{
		reg:        reg,
		opts:       opts,
		log:        opts.Log.WithField("source", "kernel"),
		registered: map[string]bool{},
		tags:       map[string]string{},
	}
	s.writeNS = s.writeNamespacesFile
	s.nsFD = pidNSFD
	return s
}

// Entries returns how many kernel entries the Source has read.
func (s *Source) Entries() uint64 { return s.entries.Load() }

// Foreign returns how many tagged entries carried a label of no attached
// container (recorded in the host list only).
func (s *Source) Foreign() uint64 { return s.foreign.Load() }

// Run tails the kernel list until ctx is done (returning nil) or the list
// cannot be read or decoded (returning the error).
func (s *Source) Run(ctx context.Context) error {
	f, err := os.Open(s.opts.ListPath)
	if err != nil {
		return fmt.Errorf("kernel source: open %s: %w", s.opts.ListPath, err)
	}
	defer f.Close()
	return s.tail(ctx, f)
}

// resume opens the cursor (when configured) and returns how many entries to
// skip: those a previous daemon already recorded in this boot.
func (s *Source) resume() (*cursor, uint64, error) {
	if s.opts.CursorPath == "" {
		return nil, 0, nil
	}
	bootID := s.opts.BootIDPath
	if bootID == "" {
		bootID = DefaultBootIDPath
	}
	c, skip, err := openCursor(s.opts.CursorPath, bootID)
	if err != nil {
		return nil, 0, err
	}
	if skip > 0 {
		s.log.WithField("entries", skip).Info("resuming after the entries a previous daemon recorded")
	}
	return c, skip, nil
}

// maxBatch bounds the entries recorded together (one journal write and
// fsync for all of them) and between two cursor updates.
const maxBatch = 1024

func (s *Source) tail(ctx context.Context, r io.Reader) error {
	cur, skip, err := s.resume()
	if err != nil {
		return err
	}
	if cur != nil {
		defer cur.Close()
	}
	dec := measurelog.NewDecoder(r, measurelog.SHA1)
	interval := s.opts.MinInterval
	var consumed uint64
	batch := make([]imans.Item, 0, maxBatch)
	// flush records the batch, then moves the cursor past it: a crash in
	// between makes the next daemon read the batch again, and the lists'
	// duplicate rule drops what was recorded.
	flush := func() error {
		if len(batch) > 0 {
			if err := s.reg.RecordAll(batch); err != nil {
				return fmt.Errorf("kernel source: %w", err)
			}
			batch = batch[:0]
		}
		if cur != nil && consumed > skip {
			return cur.store(consumed)
		}
		return nil
	}
	for {
		e, err := dec.Next()
		if err == nil {
			consumed++
			s.learn(e)
			switch {
			case consumed <= skip:
				s.entries.Add(1)
			case consumed == 1 && !s.opts.KeepBootAggregate && e.Name() == "boot_aggregate":
				s.entries.Add(1)
			default:
				batch = append(batch, s.item(e))
			}
			if len(batch) == maxBatch {
				if err := flush(); err != nil {
					return err
				}
			}
			interval = s.opts.MinInterval
			continue
		}
		// Nothing more to read for now: what was read is recorded before
		// the source waits.
		if ferr := flush(); ferr != nil {
			return ferr
		}
		var de *measurelog.DecodeError
		switch {
		case errors.Is(err, io.EOF):
		case errors.As(err, &de) && de.Torn:
			// The rest of the record follows on a later read.
		default:
			return fmt.Errorf("kernel source: read %s: %w", s.opts.ListPath, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
		interval = min(2*interval, s.opts.MaxInterval)
	}
}

// Label returns the ns field of a kernel entry: the label of the registered
// pid namespace it was made in, "" for the host or a template without ns.
func Label(e *measurelog.Entry) string {
	t, err := measurelog.LookupTemplate(e.Template)
	if err != nil {
		return ""
	}
	for i, f := range t.Fields {
		if f == "ns" && i < len(e.Fields) {
			b := e.Fields[i]
			if n := len(b); n > 0 && b[n-1] == 0 {
				b = b[:n-1]
			}
			return string(b)
		}
	}
	return ""
}

// target is the namespace whose list e goes in: the container whose
// registration its tag names, else the host.
func (s *Source) target(e *measurelog.Entry) *imans.Namespace {
	s.entries.Add(1)
	tag := Label(e)
	if tag == "" {
		return s.reg.Host()
	}
	id := tag
	if _, _, ok := splitTag(tag); ok {
		// "label:id" (kernel series v2): the registration must be one
		// made for the container, as its registration record says.
		id = s.tags[tag]
	}
	if ns, ok := s.reg.Get(id); ok && id != "" && ns.ID == id {
		return ns
	}
	s.foreign.Add(1)
	s.log.WithFields(logrus.Fields{"label": tag, "name": e.Name()}).Debug("entry of an unknown namespace: host list only")
	return s.reg.Host()
}

// item is the record of e: in its target's list, rendered for a container
// as Options.ContainerTemplate says, and unchanged in the host's.
func (s *Source) item(e *measurelog.Entry) imans.Item {
	ns := s.target(e)
	if ns == s.reg.Host() || s.opts.ContainerTemplate == ContainerNS {
		return imans.Item{NS: ns, Entry: e}
	}
	if v, ok := ContainerView(e); ok {
		return imans.Item{NS: ns, Entry: v, Host: e}
	}
	return imans.Item{NS: ns, Entry: e}
}

// splitTag splits an ns field "label:id" of the v2 kernel series; ok is
// false for a bare label (v1).
func splitTag(tag string) (label string, id uint64, ok bool) {
	i := strings.LastIndexByte(tag, ':')
	if i <= 0 {
		return "", 0, false
	}
	id, err := strconv.ParseUint(tag[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return tag[:i], id, true
}

// recordRegister names the kernel's registration records (ima-buf, series
// v2), whose buffer is "label:id pid:[inode]"; ima_ns_unregister and
// ima_ns_exit records end a registration, but entries tagged with it can
// still follow (measurements in flight), so they change nothing here.
const recordRegister = "ima_ns_register"

// learn notes a kernel registration record: a registration of an attached
// container's ID for that container's pid namespace makes entries tagged
// with it the container's. The records themselves stay in the host list.
func (s *Source) learn(e *measurelog.Entry) {
	if e.Template != measurelog.TemplateIMABuf || e.Name() != recordRegister || len(e.Fields) < 3 {
		return
	}
	tag, nsid, found := strings.Cut(string(e.Fields[2]), " ")
	label, _, ok := splitTag(tag)
	if !found || !ok {
		return
	}
	ns, ok := s.reg.Get(label)
	if !ok || ns.ID != label {
		return
	}
	if ns.Pinned != nil && nsid != fmt.Sprintf("pid:[%d]", ns.Pinned.PidNS.Ino) {
		s.log.WithFields(logrus.Fields{"tag": tag, "ns": nsid}).Warn("kernel registration of a container's ID for another pid namespace: its entries stay in the host list")
		return
	}
	s.tags[tag] = label
}

// Attached registers ns's pid namespace with the kernel under its ID. A
// stale registration of the same label (a previous daemon) is replaced.
func (s *Source) Attached(ns *imans.Namespace) {
	if ns == nil || ns.Init <= 0 {
		return
	}
	log := s.log.WithFields(logrus.Fields{"id": ns.ID, "pid": ns.Init})
	fd, release, err := s.nsFD(ns)
	if err != nil {
		log.WithError(err).Error("register with the kernel")
		return
	}
	defer release()
	cmd := fmt.Sprintf("%d %s\n", fd, ns.ID)
	err = s.writeNS(cmd)
	if errors.Is(err, syscall.EEXIST) {
		if uerr := s.writeNS("-" + ns.ID + "\n"); uerr == nil {
			err = s.writeNS(cmd)
		}
	}
	if err != nil {
		log.WithError(err).Error("register with the kernel")
		return
	}
	s.mu.Lock()
	s.registered[ns.ID] = true
	s.mu.Unlock()
	log.Info("registered with the kernel")
}

// Detached removes the kernel registration made for ns.
func (s *Source) Detached(ns *imans.Namespace) {
	if ns == nil {
		return
	}
	s.mu.Lock()
	mine := s.registered[ns.ID]
	delete(s.registered, ns.ID)
	s.mu.Unlock()
	if !mine {
		return
	}
	log := s.log.WithField("id", ns.ID)
	if err := s.writeNS("-" + ns.ID + "\n"); err != nil && !errors.Is(err, syscall.ENOENT) {
		log.WithError(err).Error("unregister from the kernel")
		return
	}
	log.Info("unregistered from the kernel")
}

// pidNSFD names ns's pid namespace by the nsfs fd its Pinned holds, or
// else by a pidfd of its init.
func pidNSFD(ns *imans.Namespace) (int, func(), error) {
	if ns.Pinned != nil {
		if fd := ns.Pinned.NSFD("pid"); fd >= 0 {
			return fd, func() {}, nil
		}
	}
	fd, err := unix.PidfdOpen(ns.Init, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("pidfd_open %d: %w", ns.Init, err)
	}
	return fd, func() { unix.Close(fd) }, nil
}

// writeNamespacesFile writes cmd in one write(2) at offset 0, as the kernel
// takes one command per write.
func (s *Source) writeNamespacesFile(cmd string) error {
	f, err := os.OpenFile(s.opts.NamespacesPath, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", s.opts.NamespacesPath, err)
	}
	_, werr := f.Write([]byte(cmd))
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("write %q to %s: %w", cmd, s.opts.NamespacesPath, werr)
	}
	if cerr != nil {
		return fmt.Errorf("close %s: %w", s.opts.NamespacesPath, cerr)
	}
	return nil
}
