package mmapsrc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/sirupsen/logrus"
)

// Kind says what an Event reports.
type Kind uint8

// Kinds of events.
const (
	Mmap     Kind = iota + 1 // mmap with PROT_EXEC of a file
	Mprotect                 // mprotect or pkey_mprotect adding PROT_EXEC to a file mapping
	Lost                     // Count mappings in MntNS (0: unknown) were not reported
)

func (k Kind) String() string {
	switch k {
	case Mmap:
		return "mmap"
	case Mprotect:
		return "mprotect"
	case Lost:
		return "lost"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Stamp is a file's version: a change of any field (the kernel's inode
// fields when the file was mapped) reports the file again.
type Stamp struct {
	Size         int64
	Mtime, Ctime time.Time
}

// Event is one executable mapping of a file, reported once per (Dev, Ino,
// MntNS) and Stamp, or (Kind Lost) a count of mappings that were not.
type Event struct {
	Kind      Kind
	Pid, Tid  int    // host ids of the mapping task
	PidNS     uint64 // inode of the task's pid namespace
	MntNS     uint64 // inode of the task's mount namespace
	Dev, Ino  uint64 // the mapped file (Dev as in stat(2))
	Stamp     Stamp  // the file's version when it was mapped
	Addr, Len uint64 // the mapping (mmap: its address; mprotect: the argument)
	Prot      uint32
	Fd        int    // mmap's descriptor, -1 for mprotect
	Count     uint64 // Lost: mappings not reported
	// File is the mapped file itself, opened read-only through
	// /proc/TID/map_files or the mmap's descriptor and checked against
	// Dev and Ino; the receiver closes it. Nil when Err is set, and for
	// MechanismLSM mmap events (Digest is set, Path from the kernel).
	File *os.File
	Path string // the file's path as the task sees it (MechanismLSM mmap: d_path in the kernel)
	// Changed: File's current size, mtime or ctime differ from Stamp (it
	// was written after it was mapped).
	Changed bool
	// Err: the file could not be opened (the task exited or unmapped it
	// first) or hashed; the mapping is not measured and the receiver must
	// say so. (MechanismLSM mprotect: with Digest set, only the path is
	// unknown.)
	Err error
	// Digest is the file's digest computed in the kernel before the
	// mapping existed (MechanismLSM: bpf_ima_file_hash), in DigestAlgo;
	// nil when the receiver must hash File itself (MechanismTracepoint).
	Digest     []byte
	DigestAlgo string
	// Denied: the kernel refused the mapping (MechanismLSM, an appraising
	// namespace and a digest it does not allow); the code never ran.
	Denied bool
}

// Mechanism names how a Source sees mappings.
type Mechanism string

// Mechanisms.
const (
	// MechanismAuto (Options): the BPF LSM where the kernel loads and
	// attaches it, else the tracepoints.
	MechanismAuto Mechanism = "auto"
	// MechanismTracepoint: a tracepoint program in the call (at its
	// mmap_lock), the receiver opens the file afterwards; it cannot
	// deny a mapping, and the receiver hashes the file.
	MechanismTracepoint Mechanism = "tracepoint"
	// MechanismLSM: a sleepable BPF LSM program on mmap_file and
	// file_mprotect, before the mapping exists; it hashes in the kernel
	// and can deny.
	MechanismLSM Mechanism = "bpf-lsm"
)

// ParseMechanism parses a mechanism's name: auto (or ""), lsm (or
// bpf-lsm), tracepoint.
func ParseMechanism(name string) (Mechanism, error) {
	switch name {
	case "", "auto":
		return MechanismAuto, nil
	case "lsm", "bpf-lsm":
		return MechanismLSM, nil
	case "tracepoint":
		return MechanismTracepoint, nil
	}
	return "", fmt.Errorf("mmap source: unknown mechanism %q (auto, lsm, tracepoint)", name)
}

// CanDeny reports whether the mechanism can stop a mapping before its
// code runs (appraise func=MMAP_CHECK enforced).
func (m Mechanism) CanDeny() bool { return m == MechanismLSM }

// Options configure a Source.
type Options struct {
	Log *logrus.Logger
	// All reports every process on the host; otherwise only the pid
	// namespaces passed to Watch and their descendants.
	All bool
	// RingBytes is the ring buffer's size (power of two, default 1 MiB).
	RingBytes uint32
	// Seen bounds the (dev, ino, mount ns) entries kept in the kernel
	// (LRU, default 65536); an evicted entry is reported again.
	Seen uint32
	// Queue is the capacity of the Events channel (default 256). While it
	// is full the ring buffer fills, and then the kernel counts lost events.
	Queue int
	// LostPoll is how often the kernel's lost counters are read (100ms).
	LostPoll time.Duration
	// Proc is the procfs mount (default "/proc").
	Proc string
	// Mechanism: MechanismAuto (""), MechanismLSM (an error when the
	// kernel refuses it) or MechanismTracepoint.
	Mechanism Mechanism
}

// Mechanism reports how the source sees mappings (MechanismLSM or
// MechanismTracepoint).
func (s *Source) Mechanism() Mechanism { return s.mech }

// Fallback is why the BPF LSM mechanism was refused when MechanismAuto
// fell back to the tracepoints (nil otherwise).
func (s *Source) Fallback() error { return s.fallback }

// Stats are a Source's counters.
type Stats struct {
	Reported   uint64 // mapping events delivered
	Unresolved uint64 // of them, with Err set
	Lost       uint64 // mappings the kernel could not report
	Denied     uint64 // mappings refused (MechanismLSM)
}

// Source reports executable file mappings (see the package doc).
type Source struct {
	opts     Options
	log      *logrus.Logger
	mech     Mechanism
	fallback error
	tp       mmapObjects // MechanismTracepoint
	lsm      lsmObjects  // MechanismLSM
	maps     maps        // the running mechanism's
	progs    map[string]*ebpf.Program
	links    []link.Link
	rd       *ringbuf.Reader
	events   chan Event
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once

	reported, unresolved atomic.Uint64

	kernelAlgo      atomic.Value // string: see KernelAlgo
	algoFromCmdline bool

	forgetMu  sync.Mutex
	forgetGen uint64 // see invalidate

	lostMu   sync.Mutex
	lostSeen map[uint32]uint64 // per mount ns, as last reported
}

// Open loads and attaches the BPF programs of Options.Mechanism. It needs
// CAP_BPF and CAP_PERFMON (root).
func Open(opts Options) (*Source, error) {
	opts = opts.withDefaults()
	removeMemlock()
	s := &Source{opts: opts, log: opts.Log, events: make(chan Event, opts.Queue), lostSeen: map[uint32]uint64{}}
	if a := kernelAlgoFromCmdline(opts.Proc); a != "" {
		s.kernelAlgo.Store(a)
		s.algoFromCmdline = true
	}
	switch opts.Mechanism {
	case MechanismAuto, "":
		if err := s.openLSM(); err != nil {
			s.fallback = err
			opts.Log.WithError(err).Info("mmap source: BPF LSM mechanism refused, falling back to the tracepoint mechanism (no in-kernel hash, cannot deny)")
			if err := s.openTracepoints(); err != nil {
				return nil, fmt.Errorf("%w (and the BPF LSM: %w)", err, s.fallback)
			}
		}
	case MechanismLSM:
		if err := s.openLSM(); err != nil {
			return nil, err
		}
	case MechanismTracepoint:
		if err := s.openTracepoints(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("mmap source: unknown mechanism %q", opts.Mechanism)
	}
	var err error
	if s.rd, err = ringbuf.NewReader(s.maps.events); err != nil {
		s.detach()
		return nil, fmt.Errorf("mmap source: ring buffer reader: %w", err)
	}
	opts.Log.WithFields(logrus.Fields{"mechanism": s.mech, "can_deny": s.mech.CanDeny()}).Info("mmap source: running")
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(2)
	go s.readLoop()
	go s.lostLoop()
	return s, nil
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.RingBytes == 0 {
		o.RingBytes = 1 << 20
	}
	if o.Seen == 0 {
		o.Seen = 65536
	}
	if o.Queue <= 0 {
		o.Queue = 256
	}
	if o.LostPoll <= 0 {
		o.LostPoll = 100 * time.Millisecond
	}
	if o.Proc == "" {
		o.Proc = "/proc"
	}
	return o
}

// maps are the maps both mechanisms have.
type maps struct {
	events, seen, watched, lost, lostTotal, deniedTotal *ebpf.Map
}

// openTracepoints loads and attaches the tracepoint programs.
func (s *Source) openTracepoints() error {
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("mmap source: the tracepoint mechanism reads x86-64 system call registers, not %s's: %w", runtime.GOARCH, errors.ErrUnsupported)
	}
	spec, err := loadMmap()
	if err != nil {
		return fmt.Errorf("mmap source: load spec: %w", err)
	}
	spec.Maps[mmapMapEvents].MaxEntries = s.opts.RingBytes
	spec.Maps[mmapMapSeen].MaxEntries = s.opts.Seen
	if err := setFilters(spec, s.opts.All); err != nil {
		return err
	}
	arg, err := lockWriteArg()
	if err != nil {
		return err
	}
	if err := spec.Variables["lock_write_arg"].Set(arg); err != nil {
		return fmt.Errorf("mmap source: set lock_write_arg: %w", err)
	}
	if err := spec.LoadAndAssign(&s.tp, nil); err != nil {
		logVerifier(s.log, err)
		return fmt.Errorf("mmap source: load programs: %w", err)
	}
	o := &s.tp
	s.mech = MechanismTracepoint
	s.maps = maps{events: o.Events, seen: o.Seen, watched: o.Watched, lost: o.Lost, lostTotal: o.LostTotal}
	s.progs = map[string]*ebpf.Program{mmapProgMapLock: o.MapLock}
	if err := s.attach(); err != nil {
		s.detach()
		return err
	}
	return nil
}

// setFilters sets the programs' constants: the pid namespace filter and
// FMODE_BACKING.
func setFilters(spec *ebpf.CollectionSpec, all bool) error {
	filter := uint32(1)
	if all {
		filter = 0
	}
	if err := spec.Variables["filter_pidns"].Set(filter); err != nil {
		return fmt.Errorf("mmap source: set filter: %w", err)
	}
	if err := spec.Variables["fmode_backing"].Set(fmodeBacking()); err != nil {
		return fmt.Errorf("mmap source: set FMODE_BACKING: %w", err)
	}
	return nil
}

func logVerifier(log *logrus.Logger, err error) {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		log.WithField("verifier", fmt.Sprintf("%+v", ve)).Error("mmap source: verifier refused the program")
	}
}

// attach attaches the tracepoint program (tp_btf: no tracefs, no perf
// event; the kernel's tracepoint is named in the program).
func (s *Source) attach() error {
	l, err := link.AttachTracing(link.TracingOptions{Program: s.tp.MapLock, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		return fmt.Errorf("mmap source: attach tracepoint mmap_lock_start_locking: %w", err)
	}
	s.links = append(s.links, l)
	return nil
}

// unlink detaches the programs (entries first).
func (s *Source) unlink() {
	for i := len(s.links) - 1; i >= 0; i-- {
		s.links[i].Close()
	}
	s.links = nil
}

// detach detaches the programs and closes the objects.
func (s *Source) detach() {
	s.unlink()
	s.closeObjects()
}

// closeObjects closes the maps and programs of both mechanisms (what was
// not loaded is nil).
func (s *Source) closeObjects() {
	s.tp.Close()
	s.lsm.Close()
}

// Events delivers the reports; it is closed by Close.
func (s *Source) Events() <-chan Event { return s.events }

// Close detaches the programs, stops the readers and closes Events (after
// a last Lost report). Files of events not yet received are closed.
func (s *Source) Close() error {
	s.once.Do(func() {
		s.unlink()
		s.cancel()
		s.rd.Close()
		s.wg.Wait()
		s.reportLost(context.Background(), true)
		close(s.events)
		s.closeObjects()
	})
	return nil
}

// Stats returns the counters.
func (s *Source) Stats() Stats {
	st := Stats{Reported: s.reported.Load(), Unresolved: s.unresolved.Load()}
	var total uint64
	if s.maps.lostTotal.Lookup(uint32(0), &total) == nil {
		st.Lost = total
	}
	if s.maps.deniedTotal != nil && s.maps.deniedTotal.Lookup(uint32(0), &total) == nil {
		st.Denied = total
	}
	return st
}

// Watch reports the mappings of tasks in the pid namespace with inode
// pidns and its descendants (up to 8 levels down). It returns the undo.
func (s *Source) Watch(pidns uint64) (func() error, error) {
	k := uint32(pidns)
	if err := s.maps.watched.Put(k, uint8(1)); err != nil {
		return nil, fmt.Errorf("mmap source: watch pid ns %d: %w", pidns, err)
	}
	if err := s.invalidate(); err != nil {
		return nil, err
	}
	return func() error {
		if err := s.maps.watched.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("mmap source: unwatch pid ns %d: %w", pidns, err)
		}
		return s.invalidate()
	}, nil
}

// Forget makes the next executable mapping of (dev, ino) in mount
// namespace mntns report again (a policy change, a measurement to redo).
func (s *Source) Forget(dev, ino, mntns uint64) error {
	k := mmapKey{Ino: ino, Dev: kernelDev(dev), Mntns: uint32(mntns)}
	if err := s.maps.seen.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("mmap source: forget %d:%d in mnt ns %d: %w", dev, ino, mntns, err)
	}
	return s.invalidate()
}

// invalidate invalidates the tracepoint program's per-task copies of the
// last mapping found reported, after a change of seen or watched.
func (s *Source) invalidate() error {
	if s.tp.ForgetGen == nil {
		return nil
	}
	s.forgetMu.Lock()
	defer s.forgetMu.Unlock()
	s.forgetGen++
	if err := s.tp.ForgetGen.Set(s.forgetGen); err != nil {
		return fmt.Errorf("mmap source: invalidate the last mapping seen: %w", err)
	}
	return nil
}

// ForgetMntNS forgets every file reported in mount namespace mntns (0:
// in every one).
func (s *Source) ForgetMntNS(mntns uint64) error {
	// Keys only: the values differ between the mechanisms.
	var keys []mmapKey
	var prev any // nil: the first key
	for {
		next := new(mmapKey)
		err := s.maps.seen.NextKey(prev, next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("mmap source: forget mnt ns %d: %w", mntns, err)
		}
		if mntns == 0 || next.Mntns == uint32(mntns) {
			keys = append(keys, *next)
		}
		prev = next
	}
	for _, k := range keys {
		if err := s.maps.seen.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("mmap source: forget mnt ns %d: %w", mntns, err)
		}
	}
	return s.invalidate()
}

// ProgramStat is one BPF program's run count and total run time (the
// kernel counts them only while kernel.bpf_stats_enabled is 1).
type ProgramStat struct {
	Runs    uint64
	Runtime time.Duration
}

// ProgramStats returns the run counts and times of the programs by name
// (tracepoint: map_lock; BPF LSM: mmap_file, file_mprotect).
func (s *Source) ProgramStats() (map[string]ProgramStat, error) {
	out := map[string]ProgramStat{}
	for name, p := range s.progs {
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("mmap source: stats of %s: %w", name, err)
		}
		out[name] = ProgramStat{Runs: st.RunCount, Runtime: st.Runtime}
	}
	return out, nil
}
