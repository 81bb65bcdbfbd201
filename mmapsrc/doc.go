// Package mmapsrc reports executable mappings of files on stock kernels
// (IMA's MMAP_CHECK and MMAP_CHECK_REQPROT hooks), which fanotify cannot
// see: ld.so's libraries, dlopen, LD_PRELOAD, mprotect(+PROT_EXEC).
//
// Two mechanisms (Options.Mechanism; auto picks the first the kernel
// accepts, Source.Mechanism says which runs, Fallback why not the LSM):
//
//   - MechanismLSM (bpf/lsm.bpf.c): BPF LSM programs on mmap_file and
//     file_mprotect run before the mapping exists, hash the file in the
//     kernel (bpf_ima_file_hash: Event.Digest, DigestAlgo) and, in a mount
//     namespace that appraises (SetAppraise), refuse with EACCES a file
//     whose digest was not allowed in that mount namespace (Allow):
//     Event.Denied. KernelAlgo is the algorithm the kernel hashes in.
//   - MechanismTracepoint (bpf/mmap.bpf.c): a tp_btf program on the
//     tracepoint mmap_lock_start_locking reports mmap, mprotect and
//     pkey_mprotect with PROT_EXEC where the call takes its mmap_lock
//     (x86-64); the source opens the mapped file (/proc/TID/map_files,
//     else the mmap's /proc/TID/fd/N, checked against the event's device
//     and inode) for the receiver to hash. It cannot deny.
//
// Both report the mappings of tasks of watched pid namespaces (Watch;
// Options.All: every task) once per (device, inode, mount namespace) and
// file version (size, mtime, ctime): an in-kernel LRU hash remembers what
// was reported. Forget and ForgetMntNS make a file report again. What
// cannot be opened or hashed arrives with Err set, never dropped; a file
// written since it was mapped is flagged Changed. A mapping the kernel
// cannot report (ring buffer full, a vma it could not inspect) is counted
// per mount namespace and delivered as a Lost event. The receiver must
// keep reading Events; while it does not, the ring buffer fills.
//
// See docs/mmap-source.md for the mechanisms, their limits and the proof
// of the LSM one in QEMU (kernel-patches/test/run-bpf).
//
//	s, err := mmapsrc.Open(mmapsrc.Options{})
//	undo, err := s.Watch(pidNSInode)
//	for ev := range s.Events() {
//		// record ev.Digest (or hash ev.File) as ev.Path; ev.Denied; ev.Err / Lost: violations
//	}
package mmapsrc
