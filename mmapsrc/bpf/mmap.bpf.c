// SPDX-License-Identifier: GPL-2.0
// mmap.bpf.c: reports executable file mappings (mmap, mprotect and
// pkey_mprotect with PROT_EXEC) once per (device, inode, mount namespace)
// and file version, through a ring buffer. One typed (tp_btf) program on
// the tracepoint mmap_lock_start_locking, where these system calls take
// their mmap_lock, after IMA's hook ran; not on the system call
// tracepoints, which put every system call of every task on the slow path
// (TIF_SYSCALL_TRACEPOINT) while attached. See ../doc.go and
// docs/mmap-source.md. Built by bpf2go (make bpf); the objects are committed.
#include "common.h"

struct event {
	struct key key;
	struct stamp stamp;
	__u64 addr; // the arguments (mmap: addr only with MAP_FIXED, else 0)
	__u64 len;
	__u32 pid; // thread group id (host)
	__u32 tid;
	__u32 pidns;
	__u32 kind;
	__s32 fd; // mmap's descriptor, -1 for mprotect
	__u32 prot;
};

// For bpf2go (-type event): a type only used on the ring buffer.
const struct event *unused_event __attribute__((unused));

// Already reported (key → stamp): a mapping whose key and stamp match
// costs no event.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct key);
	__type(value, struct stamp);
} seen SEC(".maps");

// x86-64 system call numbers and the registers of a task's system call
// (the loader refuses other architectures).
#define NR_MMAP 9 // (the tracepoint fires for munmap (11) and others too)
#define NR_MPROTECT 10
#define NR_PKEY_MPROTECT 329
struct pt_regs {
	unsigned long r10;
	unsigned long r8;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
} PAI;

#define VM_ACCESS 0x7UL // VM_READ | VM_WRITE | VM_EXEC (= the PROT_ bits)
#define MAP_FIXED 0x10
#define MAP_FIXED_NOREPLACE 0x100000
#define MNT_NOEXEC 0x04
#define SB_I_NOEXEC 0x2

// The last mapping found reported by a task, in the task's own storage
// (only the task writes it: no torn entry), with the task's nsproxy (the
// same namespaces), key and stamp. The task mapping the same file version
// again (a loop; ld.so mapping a library's segments) costs compares, not
// the watched pid namespace search nor the lookup in seen. Valid while
// its gen is forget_gen, which userspace increments after each change of
// seen (Forget, ForgetMntNS) or watched (Watch and its undo).
struct last {
	__u64 nsproxy;
	struct key key;
	struct stamp stamp;
	__u64 gen;
};
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct last);
} last_seen SEC(".maps");
volatile __u64 forget_gen = 0;

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

// Index of mmap_lock_start_locking's "write" argument: 1 from 6.12
// (mm, write), 2 before (mm, memcg_path, write); set by the loader from
// the kernel's BTF.
const volatile __u32 lock_write_arg = 1;

static __always_inline int same_key(const struct key *a, const struct key *b)
{
	return a->ino == b->ino && a->dev == b->dev && a->mntns == b->mntns;
}

// read_inode_btf is read_inode through a BTF pointer (direct loads, no
// helper call) where the running kernel has the 6.11+ inode times.
static __always_inline int read_inode_btf(struct inode *inode, struct key *k, struct stamp *st)
{
	if (!bpf_core_field_exists(inode->i_ctime_sec) || bpf_core_field_size(struct inode, i_mtime_nsec) != 4)
		return read_inode(inode, k, st);
	k->ino = inode->i_ino;
	k->dev = inode->i_sb->s_dev;
	st->size = inode->i_size;
	st->mtime_sec = inode->i_mtime_sec;
	st->ctime_sec = inode->i_ctime_sec;
	st->mtime_nsec = inode->i_mtime_nsec;
	st->ctime_nsec = inode->i_ctime_nsec & NSEC_MASK;
	return 0;
}

static __always_inline void remember(struct last *last, struct task_struct *task, const struct event *ev, __u64 gen)
{
	if (!last)
		last = bpf_task_storage_get(&last_seen, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!last)
		return;
	last->nsproxy = (__u64)task->nsproxy;
	last->key = ev->key;
	last->stamp = ev->stamp;
	last->gen = gen;
}

// known: last (task's) is valid and task has its nsproxy, so the same
// namespaces (wanted). An nsproxy freed and allocated again at the same
// address after setns can make this wrong: then at most a mapping of an
// unwatched task is reported, never one missed (report compares the
// mount namespace read now).
static __always_inline int known(struct last *last, struct task_struct *task, __u64 gen)
{
	return last && last->gen == gen && last->nsproxy == (__u64)task->nsproxy;
}

// report: task, wanted, maps inode executable; unless its key and stamp
// were reported already, report it and remember it as reported (only once
// the event is in the ring buffer). last: task's, if it has one (known:
// valid).
static __always_inline void report(struct task_struct *task, struct inode *inode, struct file *mmapped,
				   struct event *ev, struct last *last, int is_known, __u64 gen)
{
	if (mmapped ? read_inode_btf(inode, &ev->key, &ev->stamp) : read_inode(inode, &ev->key, &ev->stamp))
		return;
	// (The mount namespace read again, not taken from last: an nsproxy
	// freed and allocated again at the same address may be another.)
	ev->key.mntns = task->nsproxy->mnt_ns->ns.inum;
	if (is_known && same_key(&last->key, &ev->key) && same_stamp(&last->stamp, &ev->stamp))
		return;
	// A noexec mount refuses mmap's PROT_EXEC (EPERM) right after the
	// lock. (mprotect: no VM_MAYEXEC, checked already.)
	if (mmapped && ((mmapped->f_path.mnt->mnt_flags & MNT_NOEXEC) || (inode->i_sb->s_iflags & SB_I_NOEXEC)))
		return;
	struct stamp *old = bpf_map_lookup_elem(&seen, &ev->key);
	if (old && same_stamp(old, &ev->stamp)) {
		remember(last, task, ev, gen);
		return;
	}
	__u64 id = bpf_get_current_pid_tgid();
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->pidns = BPF_CORE_READ(task_pidns(task), ns.inum);
	struct event *out = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!out) {
		count_lost(ev->key.mntns);
		return;
	}
	*out = *ev;
	bpf_ringbuf_submit(out, 0);
	if (!bpf_map_update_elem(&seen, &ev->key, &ev->stamp, BPF_ANY))
		remember(last, task, ev, gen);
}

// mmap_begin: an mmap system call with PROT_EXEC of a file is about to
// map it (IMA's mmap_file hook has run); the file is the descriptor's.
static __always_inline void mmap_begin(struct task_struct *task, struct pt_regs *regs)
{
	__u64 prot = regs->dx, flags = regs->r10;
	__s32 fd = (__s32)regs->r8;
	if (!(prot & PROT_EXEC) || (flags & MAP_ANONYMOUS) || fd < 0)
		return;
	__u64 gen = forget_gen;
	struct last *last = bpf_task_storage_get(&last_seen, task, 0, 0);
	int is_known = known(last, task, gen);
	if (!is_known && !wanted(task))
		return;
	struct fdtable *fdt = task->files->fdt;
	if ((__u32)fd >= fdt->max_fds)
		return;
	struct file **fds = fdt->fd;
	struct file *file = NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return;
	file = bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
	struct inode *inode = file->f_inode;
	if (!inode)
		return;
	struct event ev = {
		.kind = KIND_MMAP,
		.addr = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) ? regs->di : 0,
		.len = regs->si,
		.fd = fd,
		.prot = (__u32)prot,
	};
	report(task, inode, file, &ev, last, is_known, gen);
}

struct vma_ctx {
	struct file *file;
	unsigned long flags;
};

static long vma_cb(struct task_struct *task, struct vm_area_struct *vma, struct vma_ctx *c)
{
	c->file = BPF_CORE_READ(vma, vm_file);
	c->flags = BPF_CORE_READ(vma, vm_flags);
	return 0;
}

// mprotect_begin: an mprotect or pkey_mprotect system call adding
// PROT_EXEC (its arguments checked already) is about to change the vmas:
// the vma at addr is inspected as IMA's file_mprotect does (a file
// mapping, not VM_EXEC yet) where mprotect gets that far (VM_MAY* of each
// requested access, or EACCES).
static __always_inline void mprotect_begin(struct task_struct *task, struct pt_regs *regs)
{
	__u64 addr = regs->di, len = regs->si, prot = regs->dx;
	if (!(prot & PROT_EXEC) || !wanted(task))
		return;
	struct vma_ctx c = {};
	long err = bpf_find_vma(task, addr, vma_cb, &c, 0);
	if (err == -2) // ENOENT: no mapping there, mprotect fails too
		return;
	if (err) { // EBUSY: mmap_lock contended; we cannot tell what this was
		count_lost(task->nsproxy->mnt_ns->ns.inum);
		return;
	}
	struct file *file = c.file; // (BPF_CORE_READ(c.file) would relocate vma_ctx)
	if (!file || (c.flags & VM_EXEC) || (prot & VM_ACCESS & ~(c.flags >> 4)))
		return;
	// The vma of an overlayfs file holds the real file (a backing file):
	// report the file the task mapped, as mmap does.
	struct inode *inode = user_inode(file);
	if (!inode)
		return;
	struct event ev = {
		.kind = KIND_MPROTECT,
		.addr = addr,
		.len = len,
		.fd = -1,
		.prot = (__u32)prot,
	};
	report(task, inode, NULL, &ev, bpf_task_storage_get(&last_seen, task, 0, 0), 0, forget_gen);
}

// map_lock: a task is about to take an mmap_lock (tracepoint
// mmap_lock:mmap_lock_start_locking, typed arguments: mm, [memcg_path,]
// write). mmap, mprotect and pkey_mprotect take it for writing, after
// IMA's hooks (mmap_file; file_mprotect comes under the lock, after the
// checks mprotect_begin repeats). Anything else returns at once: a read
// lock, another address space, another system call (munmap, brk, ...).
SEC("tp_btf/mmap_lock_start_locking")
int map_lock(__u64 *ctx)
{
	__u64 write;
	if (lock_write_arg == 2) {
		write = ctx[2];
		asm volatile("" : "+r"(write)); // two loads, not one of a computed address
	} else {
		write = ctx[1];
	}
	if (!(__u8)write)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if ((void *)ctx[0] != (void *)task->mm)
		return 0;
	struct pt_regs *regs = (void *)bpf_task_pt_regs(task);
	if (!regs)
		return 0;
	long nr = regs->orig_ax;
	if (nr == NR_MMAP)
		mmap_begin(task, regs);
	else if (nr == NR_MPROTECT || nr == NR_PKEY_MPROTECT)
		mprotect_begin(task, regs);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
