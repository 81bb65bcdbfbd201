// Package mmapsrc reports executable mappings of files on stock kernels
// (IMA's MMAP_CHECK and MMAP_CHECK_REQPROT hooks), which fanotify cannot
// see: ld.so's libraries, dlopen, LD_PRELOAD, mprotect(+PROT_EXEC).
//
// BPF programs (bpf/mmap.bpf.c, generated loader committed; make bpf) on
// the tracepoints syscalls/sys_{enter,exit}_{mmap,mprotect,pkey_mprotect}
// see each mapping with PROT_EXEC of a file by a task of a watched pid
// namespace (Watch; Options.All: every task) and report it through a ring
// buffer once per (device, inode, mount namespace) and file version (size,
// mtime, ctime): an in-kernel LRU hash remembers what was reported, so a
// library mapped again costs no event. Forget and ForgetMntNS make a file
// report again. A mapping is reported when its system call succeeded.
//
// An event arrives after the fact: the task may already run the code, and
// may have closed the descriptor (ld.so does at once) or unmapped the
// file. The source therefore opens the mapping itself,
// /proc/TID/map_files/START-END of the mapping holding the address (valid
// while it is mapped), else the mmap's /proc/TID/fd/N (valid until closed;
// the number may be reused), and checks the opened file's device and inode against the
// event. What cannot be opened arrives with Err set, never dropped. A file
// written between the mapping and the open is flagged Changed (its size,
// mtime or ctime differ from the event's Stamp): the receiver measures what
// it reads and can say the mapped version is unknown.
//
// A mapping the kernel cannot report (ring buffer full, a vma it could not
// inspect, too many pending calls) is counted per mount namespace and
// delivered as a Lost event:
// a failure to measure is never silent. The receiver must keep reading
// Events; while it does not, the ring buffer fills.
//
// A tracepoint observes; it cannot deny a mapping. See docs/mmap-source.md
// for the mechanism, its limits and the BPF LSM plan.
//
//	s, err := mmapsrc.Open(mmapsrc.Options{})
//	undo, err := s.Watch(pidNSInode)
//	for ev := range s.Events() { /* measure ev.File as ev.Path, or record ev.Err / ev.Count lost */ }
package mmapsrc
