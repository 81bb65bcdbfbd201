package mmapsrc

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/mountns"
)

// ErrCannotDeny: the running mechanism cannot refuse a mapping
// (MechanismTracepoint), so SetAppraise cannot turn appraisal on.
var ErrCannotDeny = errors.New("the mmap source's mechanism cannot deny a mapping")

// ErrBPFLSMInactive: the kernel loads BPF LSM programs but the bpf LSM is
// not in its active list (lsm= or CONFIG_LSM): its hooks would never run.
var ErrBPFLSMInactive = errors.New("bpf is not an active LSM (lsm= / CONFIG_LSM)")

// lsmEvent flags (bpf/lsm.bpf.c).
const (
	flagDigest = 1
	flagDenied = 2
	flagPath   = 4
)

// openLSM loads and attaches the BPF LSM programs (bpf/lsm.bpf.c). The
// kernel refuses them without CONFIG_BPF_LSM or BPF trampolines (EPERM,
// EINVAL or ENOTSUPP at load or attach); with bpf missing from the active
// LSMs they would attach and never run, so that is checked first.
func (s *Source) openLSM() error {
	if err := bpfLSMActive(); err != nil {
		return err
	}
	spec, err := loadLsm()
	if err != nil {
		return fmt.Errorf("mmap source: load BPF LSM spec: %w", err)
	}
	spec.Maps[lsmMapEvents].MaxEntries = s.opts.RingBytes
	spec.Maps[lsmMapSeen].MaxEntries = s.opts.Seen
	if err := setFilters(spec, s.opts.All); err != nil {
		return err
	}
	if err := spec.LoadAndAssign(&s.lsm, nil); err != nil {
		logVerifier(s.log, err)
		s.lsm = lsmObjects{}
		return fmt.Errorf("mmap source: load BPF LSM programs: %w", err)
	}
	o := &s.lsm
	for _, p := range []*ebpf.Program{o.MmapFile, o.FileMprotect} {
		l, err := link.AttachLSM(link.LSMOptions{Program: p})
		if err != nil {
			s.unlink()
			s.lsm.Close()
			s.lsm = lsmObjects{}
			return fmt.Errorf("mmap source: attach BPF LSM program %s: %w", p, err)
		}
		s.links = append(s.links, l)
	}
	s.mech = MechanismLSM
	s.maps = maps{events: o.Events, seen: o.Seen, watched: o.Watched, lost: o.Lost, lostTotal: o.LostTotal, deniedTotal: o.DeniedTotal}
	s.progs = map[string]*ebpf.Program{lsmProgMmapFile: o.MmapFile, lsmProgFileMprotect: o.FileMprotect}
	return nil
}

// bpfLSMActive checks that "bpf" is in securityfs's lsm file (mounting
// securityfs on a temporary directory when it is not mounted).
func bpfLSMActive() error {
	data, err := mountns.ReadSecurityfs("lsm")
	if err != nil {
		return fmt.Errorf("mmap source: active LSMs: %w", err)
	}
	for _, name := range strings.Split(strings.TrimSpace(string(data)), ",") {
		if name == "bpf" {
			return nil
		}
	}
	return fmt.Errorf("mmap source: %w: %s", ErrBPFLSMInactive, strings.TrimSpace(string(data)))
}

// SetAppraise makes the mount namespace with inode mntns appraise
// executable mappings (on) or not: its tasks' mappings of a file whose
// digest was not passed to Allow for mntns fail with EACCES, before the
// mapping exists, and are reported with Denied. Turning it off also drops
// the digests allowed in mntns. MechanismLSM only: turning it on under
// another mechanism returns ErrCannotDeny.
func (s *Source) SetAppraise(mntns uint64, on bool) error {
	if s.mech != MechanismLSM {
		if on {
			return fmt.Errorf("mmap source: appraise mnt ns %d: %w (mechanism %s)", mntns, ErrCannotDeny, s.mech)
		}
		return nil
	}
	k := uint32(mntns)
	var err error
	if on {
		err = s.lsm.Appraise.Put(k, uint8(1))
	} else if err = s.lsm.Appraise.Delete(k); errors.Is(err, ebpf.ErrKeyNotExist) {
		err = s.DisallowAll(mntns)
	} else if err == nil {
		err = s.DisallowAll(mntns)
	}
	if err != nil {
		return fmt.Errorf("mmap source: appraise mnt ns %d (%v): %w", mntns, on, err)
	}
	return nil
}

// Allow lets mappings of files with this digest (algo as in
// Event.DigestAlgo, e.g. "sha256") through in mount namespace mntns when it
// appraises (each container trusts its own keys); Disallow undoes it.
// Without MechanismLSM nothing is appraised and both do nothing.
func (s *Source) Allow(mntns uint64, algo string, digest []byte) error {
	return s.allow(mntns, algo, digest, true)
}

// Disallow removes a digest passed to Allow.
func (s *Source) Disallow(mntns uint64, algo string, digest []byte) error {
	return s.allow(mntns, algo, digest, false)
}

func (s *Source) allow(mntns uint64, algo string, digest []byte, on bool) error {
	id, ok := hashAlgoID(algo)
	if !ok || len(digest) != hashAlgos[id].size {
		return fmt.Errorf("mmap source: allow %s digest of %d bytes: %w", algo, len(digest), unix.EINVAL)
	}
	if s.mech != MechanismLSM {
		return nil
	}
	k := lsmDigestKey{Mntns: uint32(mntns), Algo: id}
	copy(k.Digest[:], digest)
	var err error
	if on {
		err = s.lsm.Allowed.Put(k, uint8(1))
	} else if err = s.lsm.Allowed.Delete(k); errors.Is(err, ebpf.ErrKeyNotExist) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("mmap source: allow %s:%x in mnt ns %d (%v): %w", algo, digest, mntns, on, err)
	}
	return nil
}

// DisallowAll drops every digest allowed in mount namespace mntns (0: in
// every one), e.g. after its keys or policy changed.
func (s *Source) DisallowAll(mntns uint64) error {
	if s.mech != MechanismLSM {
		return nil
	}
	var keys []lsmDigestKey
	var prev any // nil: the first key
	for {
		next := new(lsmDigestKey)
		err := s.lsm.Allowed.NextKey(prev, next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("mmap source: disallow in mnt ns %d: %w", mntns, err)
		}
		if mntns == 0 || next.Mntns == uint32(mntns) {
			keys = append(keys, *next)
		}
		prev = next
	}
	for _, k := range keys {
		if err := s.lsm.Allowed.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("mmap source: disallow in mnt ns %d: %w", mntns, err)
		}
	}
	return nil
}

// KernelAlgo is the algorithm bpf_ima_file_hash hashes in (IMA's
// ima_hash_algo): ima_hash= on the kernel command line, else the digest
// algorithm of the last event that carried one, else sha256 (the
// CONFIG_IMA_DEFAULT_HASH of distribution kernels).
func (s *Source) KernelAlgo() string {
	if a, _ := s.kernelAlgo.Load().(string); a != "" {
		return a
	}
	return "sha256"
}

// kernelAlgoFromCmdline reads ima_hash= of the kernel command line ("" when
// it is not given or not a known name).
func kernelAlgoFromCmdline(proc string) string {
	data, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(data)) {
		if v, ok := strings.CutPrefix(f, "ima_hash="); ok {
			if _, known := hashAlgoID(v); known {
				return v
			}
		}
	}
	return ""
}

// The kernel's enum hash_algo (include/uapi/linux/hash_info.h): IMA's
// names (hash_algo_name) and digest sizes.
var hashAlgos = []struct {
	name string
	size int
}{
	{"md4", 16}, {"md5", 16}, {"sha1", 20}, {"rmd160", 20}, {"sha256", 32}, {"sha384", 48},
	{"sha512", 64}, {"sha224", 28}, {"rmd128", 16}, {"rmd256", 32}, {"rmd320", 40}, {"wp256", 32},
	{"wp384", 48}, {"wp512", 64}, {"tgr128", 16}, {"tgr160", 20}, {"tgr192", 24}, {"sm3", 32},
	{"streebog256", 32}, {"streebog512", 64},
}

func hashAlgoID(name string) (uint32, bool) {
	for i, a := range hashAlgos {
		if a.name == name {
			return uint32(i), true
		}
	}
	return 0, false
}

// lsmEvent converts a record of bpf/lsm.bpf.c, and says whether the file
// must be opened: for an mprotect (the vma exists), for its path (the
// program cannot call bpf_d_path there) and, when the kernel had no digest
// of the file, for the receiver to hash it.
func lsmEvent(r *lsmLsmEvent) (Event, bool) {
	ev := Event{
		Kind:  Kind(r.Kind),
		Pid:   int(r.Pid),
		Tid:   int(r.Tid),
		PidNS: uint64(r.Pidns),
		MntNS: uint64(r.Key.Mntns),
		Dev:   userDev(r.Key.Dev),
		Ino:   r.Key.Ino,
		Stamp: Stamp{
			Size:  r.Stamp.Size,
			Mtime: time.Unix(r.Stamp.MtimeSec, int64(r.Stamp.MtimeNsec)),
			Ctime: time.Unix(r.Stamp.CtimeSec, int64(r.Stamp.CtimeNsec)),
		},
		Addr:   r.Addr,
		Len:    r.Len,
		Prot:   r.Prot,
		Fd:     -1,
		Denied: r.Flags&flagDenied != 0,
	}
	if r.Flags&flagPath != 0 {
		b := make([]byte, 0, len(r.Path))
		for _, c := range r.Path {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		ev.Path = string(b)
	}
	if r.Flags&flagDigest != 0 {
		if int(r.Algo) >= len(hashAlgos) {
			ev.Err = fmt.Errorf("kernel digest of unknown algorithm %d", r.Algo)
			return ev, false
		}
		a := hashAlgos[r.Algo]
		ev.DigestAlgo, ev.Digest = a.name, append([]byte(nil), r.Digest[:a.size]...)
		return ev, ev.Kind == Mprotect
	}
	if ev.Kind == Mprotect {
		return ev, true
	}
	ev.Err = fmt.Errorf("pid %d: kernel hash of %d:%d (bpf_ima_file_hash): %w", ev.Pid, ev.Dev, ev.Ino, unix.Errno(-r.HashErr))
	return ev, false
}
