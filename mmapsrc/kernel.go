package mmapsrc

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"

	"golang.org/x/sys/unix"
)

// What the loader needs to know of the running kernel.

// fmodeBacking is the running kernel's FMODE_BACKING (a #define, so not
// in BTF): 1<<25 from 6.6 (backing files), 1<<24 from 6.12; 0 before. The
// BPF program checks the file it finds through it is an overlayfs or FUSE
// file, so a wrong bit on an unusual kernel changes nothing.
func fmodeBacking() uint32 {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return 0
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	switch v := major*1000 + minor; {
	case v >= 6012:
		return 1 << 24
	case v >= 6006:
		return 1 << 25
	}
	return 0
}

// lockWriteArg is the index of the "write" argument of the running
// kernel's tracepoint mmap_lock_start_locking: 1 from 6.12 (mm, write), 2
// before (mm, memcg_path, write). Read from the kernel's BTF, where the
// tracepoint's typed signature is btf_trace_mmap_lock_start_locking (with
// a leading context argument).
func lockWriteArg() (uint32, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, fmt.Errorf("mmap source: kernel BTF: %w", err)
	}
	var td *btf.Typedef
	if err := spec.TypeByName("btf_trace_mmap_lock_start_locking", &td); err != nil {
		return 0, fmt.Errorf("mmap source: tracepoint mmap_lock_start_locking: %w", err)
	}
	ptr, ok := td.Type.(*btf.Pointer)
	var proto *btf.FuncProto
	if ok {
		proto, ok = ptr.Target.(*btf.FuncProto)
	}
	if !ok || len(proto.Params) < 3 || len(proto.Params) > 4 {
		return 0, fmt.Errorf("mmap source: tracepoint mmap_lock_start_locking has an unknown signature %v: %w", td.Type, errors.ErrUnsupported)
	}
	return uint32(len(proto.Params) - 2), nil
}

// kernelDev converts a stat(2) device number to the kernel's encoding
// (MAJOR << 20 | MINOR) and userDev back.
func kernelDev(dev uint64) uint32 { return unix.Major(dev)<<20 | unix.Minor(dev) }
func userDev(kdev uint32) uint64  { return unix.Mkdev(kdev>>20, kdev&0xfffff) }

// removeMemlock lifts RLIMIT_MEMLOCK as far as it may, which kernels before
// 5.11 charge BPF maps to (later ones charge the memory cgroup, and a
// daemon without CAP_SYS_RESOURCE, as under imafs.service, cannot raise the
// hard limit: then the soft one goes up to it; should the maps still not
// fit, loading them fails with the kernel's error). Not cilium/ebpf's rlimit
// package: its init creates a BPF map in every process that links it, and
// every imafs command does (the fanotify keeper, whose systemd unit allows
// no bpf(2), died of SIGSYS at start).
func removeMemlock() {
	if unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}) == nil {
		return
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim)
	}
}
