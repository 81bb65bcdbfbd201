package vtpm

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm-tools/client"
	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/measurelog"
)

// ErrNotSynced is returned by Extend and Quote on a TPM whose PCRs have not
// been brought up to date with Resync since it started.
var ErrNotSynced = errors.New("vtpm: PCRs not resynced since start")

// EntrySource is where a quote's measurement list comes from: the
// namespace's *measurelog.List.
type EntrySource interface {
	Len() int
	Entry(i int) *measurelog.Entry
}

// SWTPMOptions configure one namespace's swtpm.
type SWTPMOptions struct {
	// ID names the namespace (the imafs container ID); it goes into quotes.
	ID string
	// StateDir holds the TPM's persistent state (seeds, NV, the persisted
	// attestation key) across restarts; created 0700 if missing.
	StateDir string
	// SocketDir holds the server and control sockets; StateDir if empty.
	// A unix socket path must fit in 107 bytes: use a short directory
	// (e.g. /run/imafs/vtpm) when state directories are long.
	SocketDir string
	// Binary is the swtpm executable; "swtpm" (looked up in PATH) if empty.
	Binary string
	// List is the namespace's measurement list, which Quote puts into the
	// bundle (its first Extended() entries).
	List EntrySource
	// Host, if set, binds the namespace's attestation key to the host TPM;
	// every bundle then carries that binding (ak_binding).
	Host *HostAttester
	// Log receives lifecycle messages; logrus's standard logger if nil.
	Log logrus.FieldLogger
}

// SWTPM is one namespace's software TPM: a swtpm process on a persistent
// state directory and the single connection imafs holds to it.
//
// Lifecycle. StartSWTPM always starts a fresh swtpm process, which begins
// with TPM2_Startup(CLEAR): every PCR is reset, while the persistent state
// (seeds, NV, the attestation key persisted at 0x81008F00) survives, so a
// namespace keeps its attestation key across daemon restarts. The process is
// started with --terminate: it exits as soon as imafs's connection closes,
// so a crashed daemon leaves no swtpm behind, and a restarted daemon starts
// a new one on the same state directory. After a start, PCRs are zero; the
// daemon must call Resync with the namespace's journaled entries before it
// records anything new. Until then Extend and Quote return ErrNotSynced, so
// the TPM can never be quoted while it disagrees with the list.
type SWTPM struct {
	opts    SWTPMOptions
	log     logrus.FieldLogger
	sock    string
	ctrl    string
	pidFile string

	tpm *TPM

	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has been reaped
	waitErr  error
	closeOne sync.Once

	// mu orders Extend/Resync/Quote so that a quote always covers exactly
	// the first extended entries of the list.
	mu       sync.Mutex
	synced   bool
	extended int          // entries extended since start (incl. Resync)
	touched  map[int]bool // PCR indexes extended at least once
	ak       *client.Key
	binding  *AKBinding // from SWTPMOptions.Host, made with the key
}

// StartSWTPM starts a swtpm process for a namespace and connects to it.
// It refuses a state directory that a running swtpm still serves.
func StartSWTPM(opts SWTPMOptions) (*SWTPM, error) {
	if opts.StateDir == "" {
		return nil, errors.New("start swtpm: no state directory")
	}
	if opts.Binary == "" {
		opts.Binary = "swtpm"
	}
	if opts.SocketDir == "" {
		opts.SocketDir = opts.StateDir
	}
	log := opts.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	s := &SWTPM{
		opts:    opts,
		log:     log.WithFields(logrus.Fields{"ns": opts.ID, "tpmstate": opts.StateDir}),
		sock:    filepath.Join(opts.SocketDir, "swtpm.sock"),
		ctrl:    filepath.Join(opts.SocketDir, "swtpm.ctrl"),
		pidFile: filepath.Join(opts.StateDir, "swtpm.pid"),
		done:    make(chan struct{}),
		touched: map[int]bool{MeasurePCR: true}, // PCR 10 is always quoted
	}
	// swtpm's option syntax (key=value,key=value) cannot quote a comma.
	if strings.Contains(opts.StateDir, ",") || strings.Contains(opts.SocketDir, ",") {
		return nil, fmt.Errorf("start swtpm for %q: state or socket directory contains a comma, which swtpm's options cannot express", opts.ID)
	}
	if len(s.sock) > 107 || len(s.ctrl) > 107 {
		return nil, fmt.Errorf("start swtpm for %q: socket path %s is longer than a unix socket allows: set a shorter SocketDir", opts.ID, s.ctrl)
	}
	for _, d := range []string{opts.StateDir, opts.SocketDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("start swtpm for %q: %w", opts.ID, err)
		}
	}
	if err := s.checkNotRunning(); err != nil {
		return nil, err
	}
	for _, p := range []string{s.sock, s.ctrl} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("start swtpm for %q: remove stale socket: %w", opts.ID, err)
		}
	}
	logFile := filepath.Join(opts.StateDir, "swtpm.log")
	s.cmd = exec.Command(opts.Binary, "socket", "--tpm2",
		"--tpmstate", "dir="+opts.StateDir+",mode=0600",
		"--server", "type=unixio,path="+s.sock+",mode=0600",
		"--ctrl", "type=unixio,path="+s.ctrl+",mode=0600",
		"--flags", "not-need-init,startup-clear",
		"--pid", "file="+s.pidFile,
		"--log", "file="+logFile+",level=1,truncate",
		"--terminate",
	)
	var stderr bytes.Buffer
	s.cmd.Stderr = &stderr
	s.cmd.Stdout = &stderr
	// Its own process group: a Ctrl-C aimed at a foreground daemon must not
	// kill the TPMs before the daemon has closed them.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start swtpm for %q: %w", opts.ID, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	conn, err := s.connect()
	if err != nil {
		s.kill()
		return nil, fmt.Errorf("start swtpm for %q (pid %d): %w; output: %s", opts.ID, s.cmd.Process.Pid, err, strings.TrimSpace(stderr.String()))
	}
	s.tpm = &TPM{rwc: conn, path: s.sock}
	s.log.WithField("pid", s.cmd.Process.Pid).Info("swtpm started")
	return s, nil
}

// connect waits for the server socket and opens the one connection imafs
// keeps. The first successful dial is that connection: with --terminate a
// probe connection would end the process when it closed.
func (s *SWTPM) connect() (*msgConn, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-s.done:
			return nil, fmt.Errorf("swtpm exited: %v", s.waitErr)
		default:
		}
		c, err := net.DialTimeout("unix", s.sock, time.Second)
		if err == nil {
			return &msgConn{conn: c}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to %s: %w", s.sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkNotRunning refuses a state directory a live swtpm still serves (found
// through its pid file and checked by its command line). Normally there is
// none: --terminate ends a swtpm with its connection, i.e. with its daemon.
// Killing it instead would break a daemon still running on it; swtpm's own
// lock on the state directory backs this check.
func (s *SWTPM) checkNotRunning() error {
	data, err := os.ReadFile(s.pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("start swtpm for %q: read pid file: %w", s.opts.ID, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return nil // garbage pid file: swtpm rewrites it
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil // not running
	}
	args := strings.Split(string(cmdline), "\x00")
	if len(args) == 0 || filepath.Base(args[0]) != filepath.Base(s.opts.Binary) ||
		!strings.Contains(string(cmdline), "dir="+s.opts.StateDir+",") {
		return nil // pid reused by another process
	}
	return fmt.Errorf("start swtpm for %q: state directory %s is in use by swtpm pid %d", s.opts.ID, s.opts.StateDir, pid)
}

// Pid is the swtpm process id.
func (s *SWTPM) Pid() int { return s.cmd.Process.Pid }

// TPM is the connection to the swtpm, for reads and anything this type
// does not wrap. Extending PCRs through it bypasses the bookkeeping that
// keeps quotes consistent: use SWTPM.Extend.
func (s *SWTPM) TPM() *TPM { return s.tpm }

// Extended is the number of entries extended since the start, Resync
// included: a quote covers exactly the first Extended() entries.
func (s *SWTPM) Extended() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.extended
}

// Resync brings the TPM's PCRs up to the replay of entries, the whole
// journaled list of the namespace, in order. On a freshly started swtpm
// (PCRs zero) it extends every entry. On a TPM that already holds a prefix
// of entries (e.g. Resync after entries were journaled but not extended) it
// extends only the rest. If the PCRs hold anything else it fails: the TPM
// and the list disagree, and only a restart (StartSWTPM, which resets the
// PCRs) and a new Resync can fix it.
func (s *SWTPM) Resync(entries []*measurelog.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	touched := map[int]bool{MeasurePCR: true}
	for i, e := range entries {
		if e == nil {
			return fmt.Errorf("resync vtpm %q: entry %d is nil", s.opts.ID, i)
		}
		if e.PCR > maxPCR {
			return fmt.Errorf("resync vtpm %q: entry %d: PCR %d out of range", s.opts.ID, i, e.PCR)
		}
		touched[int(e.PCR)] = true
	}
	indexes := sortedKeys(touched)
	have := map[measurelog.Algo]map[int][]byte{}
	for _, b := range Banks {
		v, err := s.tpm.ReadPCRs(b, indexes)
		if err != nil {
			return fmt.Errorf("resync vtpm %q: %w", s.opts.ID, err)
		}
		have[b] = v
	}
	// Find the prefix the TPM holds: replay step by step and compare.
	replay := measurelog.NewPCRs(Banks...)
	matches := func() bool {
		for _, b := range Banks {
			for _, i := range indexes {
				if !bytes.Equal(pcrValue(replay, b, i), have[b][i]) {
					return false
				}
			}
		}
		return true
	}
	start := -1
	for k := 0; ; k++ {
		if matches() {
			start = k
		}
		if k == len(entries) {
			break
		}
		replay.Extend(entries[k])
	}
	if start < 0 {
		return fmt.Errorf("resync vtpm %q: the TPM's PCRs %v are not the replay of any prefix of the %d entries: restart the swtpm and resync", s.opts.ID, indexes, len(entries))
	}
	for k := start; k < len(entries); k++ {
		if err := s.tpm.Extend(entries[k]); err != nil {
			return fmt.Errorf("resync vtpm %q: entry %d: %w", s.opts.ID, k, err)
		}
	}
	s.extended = len(entries)
	for i := range touched {
		s.touched[i] = true
	}
	s.synced = true
	s.log.WithFields(logrus.Fields{"entries": len(entries), "already": start}).Info("vtpm resynced")
	return nil
}

// pcrValue is replay's value of a PCR, zeros for one never extended.
func pcrValue(p *measurelog.PCRs, bank measurelog.Algo, index int) []byte {
	v := p.Value(bank, index)
	if v == nil {
		return make([]byte, bank.Size())
	}
	return v
}

// Extend extends e into the TPM (e.PCR in every bank). Call it for each
// entry appended to the namespace's list, in list order, after Resync.
func (s *SWTPM) Extend(e *measurelog.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		return fmt.Errorf("extend vtpm %q: %w", s.opts.ID, ErrNotSynced)
	}
	if e.PCR > maxPCR {
		return fmt.Errorf("extend vtpm %q: PCR %d out of range", s.opts.ID, e.PCR)
	}
	if err := s.tpm.Extend(e); err != nil {
		return fmt.Errorf("extend vtpm %q: %w", s.opts.ID, err)
	}
	s.extended++
	s.touched[int(e.PCR)] = true
	return nil
}

// attestationKey loads (first use: creates and persists) the namespace's
// ECC P-256 attestation key from go-tpm-tools' AK template in the owner
// hierarchy. It is derived from the TPM's persistent owner seed, so it is
// the same key for the namespace's whole life.
func (s *SWTPM) attestationKey() (*client.Key, error) {
	if s.ak != nil {
		return s.ak, nil
	}
	s.tpm.mu.Lock()
	defer s.tpm.mu.Unlock()
	rw, err := s.tpm.conn()
	if err != nil {
		return nil, err
	}
	ak, err := client.AttestationKeyECC(rw)
	if err != nil {
		return nil, fmt.Errorf("attestation key of vtpm %q: %w", s.opts.ID, err)
	}
	if s.opts.Host != nil {
		pub, err := ak.PublicArea().Encode()
		if err != nil {
			return nil, fmt.Errorf("attestation key of vtpm %q: encode: %w", s.opts.ID, err)
		}
		if s.binding, err = s.opts.Host.Bind(s.opts.ID, pub); err != nil {
			return nil, err
		}
	}
	s.ak = ak
	return ak, nil
}

// AKPublic is the attestation key's TPMT_PUBLIC area, as in bundles.
func (s *SWTPM) AKPublic() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ak, err := s.attestationKey()
	if err != nil {
		return nil, err
	}
	pub, err := ak.PublicArea().Encode()
	if err != nil {
		return nil, fmt.Errorf("attestation key of vtpm %q: encode: %w", s.opts.ID, err)
	}
	return pub, nil
}

// Close stops the swtpm: it closes the connection (the process then exits
// by itself, --terminate), waits for it, and signals it by pid only if it
// does not exit in time. The persistent state stays in StateDir.
func (s *SWTPM) Close() error {
	var err error
	s.closeOne.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.ak = nil // persisted at 0x81008F00: nothing to flush
		s.synced = false
		if s.tpm != nil {
			_ = s.tpm.Close()
		}
		err = s.stop(5 * time.Second)
		_ = os.Remove(s.sock)
		_ = os.Remove(s.ctrl)
		_ = os.Remove(s.pidFile)
	})
	return err
}

func (s *SWTPM) stop(grace time.Duration) error {
	pid := s.cmd.Process.Pid
	select {
	case <-s.done:
		return nil
	case <-time.After(grace):
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return nil
	case <-time.After(grace):
	}
	s.log.WithField("pid", pid).Warn("swtpm ignored SIGTERM, killing it")
	s.kill()
	return nil
}

// kill ends the process by pid and reaps it.
func (s *SWTPM) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Exited is closed when the swtpm process has ended.
func (s *SWTPM) Exited() <-chan struct{} { return s.done }

func sortedKeys(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}
