// SPDX-License-Identifier: GPL-2.0
// mmap.bpf.c: reports executable file mappings (mmap and mprotect/
// pkey_mprotect with PROT_EXEC) once per (device, inode, mount namespace)
// and file version, through a ring buffer. See ../doc.go and
// docs/mmap-source.md. Built by bpf2go (make bpf); the objects are committed.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define PAI __attribute__((preserve_access_index))

#define PROT_EXEC 0x4
#define MAP_ANONYMOUS 0x20
#define VM_EXEC 0x4UL
#define MAX_ERRNO 4095
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define FUSE_SUPER_MAGIC 0x65735546
#define NSEC_MASK 0x3fffffffU // nanoseconds need 30 bits
#define PIDNS_DEPTH 8 // pid namespace ancestors searched for a watched one

enum kind { KIND_MMAP = 1, KIND_MPROTECT = 2 };

// Kernel types, only the fields read; CO-RE relocates them against the
// running kernel's BTF.
struct ns_common { unsigned int inum; } PAI;
struct mnt_namespace { struct ns_common ns; } PAI;
struct pid_namespace {
	unsigned int level;
	struct pid_namespace *parent;
	struct ns_common ns;
} PAI;
struct nsproxy {
	struct mnt_namespace *mnt_ns;
	struct pid_namespace *pid_ns_for_children;
} PAI;
struct upid { int nr; struct pid_namespace *ns; } PAI;
struct pid { unsigned int level; struct upid numbers[1]; } PAI;
struct fdtable { unsigned int max_fds; struct file **fd; } PAI;
struct files_struct { struct fdtable *fdt; } PAI;
struct task_struct {
	struct pid *thread_pid;
	struct nsproxy *nsproxy;
	struct files_struct *files;
} PAI;
struct super_block {
	__u32 s_dev;
	unsigned long s_magic;
} PAI;
struct timespec64 { long long tv_sec; long tv_nsec; } PAI;
struct inode {
	struct super_block *i_sb;
	unsigned long i_ino;
	long long i_size;
	long long i_mtime_sec; // 6.11+
	long long i_ctime_sec;
	__u32 i_mtime_nsec;
	__u32 i_ctime_nsec;
} PAI;
struct inode___v66 { // 6.6-6.10 (__i_mtime from 6.7)
	struct timespec64 __i_mtime;
	struct timespec64 __i_ctime;
} PAI;
struct inode___v65 { // before 6.6 (i_mtime until 6.6)
	struct timespec64 i_mtime;
	struct timespec64 i_ctime;
} PAI;
struct file {
	unsigned int f_mode;
	struct inode *f_inode;
} PAI;
struct dentry { struct inode *d_inode; } PAI;
struct path { struct dentry *dentry; } PAI;
// A stacking file system's (overlayfs) file mapped in a vma (6.6+): the
// task mapped user_path's file.
struct backing_file {
	struct file file;
	struct path user_path;
} PAI;
struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	unsigned long vm_flags;
	struct file *vm_file;
} PAI;

// The version of a file as the kernel sees it when it is mapped: a
// change of any field reports the file again.
struct stamp {
	__s64 size;
	__s64 mtime_sec;
	__s64 ctime_sec;
	__u32 mtime_nsec;
	__u32 ctime_nsec;
};

struct key {
	__u64 ino;
	__u32 dev; // kernel encoding (MAJOR << 20 | MINOR)
	__u32 mntns;
};

struct event {
	struct key key;
	struct stamp stamp;
	__u64 addr; // mmap: the mapping's address (return value); mprotect: the argument
	__u64 len;
	__u32 pid; // thread group id (host)
	__u32 tid;
	__u32 pidns;
	__u32 kind;
	__s32 fd; // mmap's descriptor, -1 for mprotect
	__u32 prot;
};

const volatile __u32 filter_pidns = 0; // 1: only watched pid namespaces (and descendants)
// FMODE_BACKING of the running kernel (1 << 25 in 6.6-6.11, 1 << 24 from
// 6.12; 0 before 6.6), set by the loader from the kernel's version: it is
// a #define, not in BTF.
const volatile __u32 fmode_backing = 0;

// Entries in pending, or more (a hint that lets a system call's exit skip
// the lookup; it is never too low).
__u64 npending = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

// Already reported (key → stamp): a mapping whose key and stamp match
// costs no event.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct key);
	__type(value, struct stamp);
} seen SEC(".maps");

// A mapping between its system call's entry and exit, by thread. A plain
// hash, not an LRU: an entry is never evicted (it would be a mapping lost
// without a count); a full map counts the mapping as lost. An entry lives
// only during its thread's system call (the exit always runs), and a
// thread id used again overwrites its stale entry.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct event);
} pending SEC(".maps");

// Watched pid namespaces (inode → 1), when filter_pidns.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} watched SEC(".maps");

// Events lost (ring buffer full, vma not inspectable) by mount namespace,
// and in total (index 0 of lost_total): userspace turns them into
// violations.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost_total SEC(".maps");

// Tracepoint contexts (/sys/kernel/tracing/events/syscalls/*/format).
struct sys_enter_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};
struct sys_exit_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

static __always_inline void count_lost(__u32 mntns)
{
	__u32 zero = 0;
	__u64 one = 1, *v = bpf_map_lookup_elem(&lost_total, &zero);
	if (v)
		__sync_fetch_and_add(v, 1);
	v = bpf_map_lookup_elem(&lost, &mntns);
	if (v) {
		__sync_fetch_and_add(v, 1);
		return;
	}
	if (bpf_map_update_elem(&lost, &mntns, &one, BPF_NOEXIST)) {
		v = bpf_map_lookup_elem(&lost, &mntns);
		if (v)
			__sync_fetch_and_add(v, 1);
	}
}

static __always_inline struct pid_namespace *task_pidns(struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid *up = (void *)pid + bpf_core_field_offset(struct pid, numbers) +
			  (__u64)(level & 63) * bpf_core_type_size(struct upid);
	struct pid_namespace *ns = NULL;
	bpf_probe_read_kernel(&ns, sizeof(ns), &up->ns);
	return ns;
}

// wanted: the task's pid namespace or one of its ancestors is watched.
// It starts at the namespace of the task's children, which is the task's
// own or (after unshare(CLONE_NEWPID)) a child of it, because that one
// costs no probe read (task is a trusted BTF pointer: direct loads).
static __always_inline int wanted(struct task_struct *task)
{
	if (!filter_pidns)
		return 1;
	struct pid_namespace *ns = task->nsproxy->pid_ns_for_children;
	for (int i = 0; i < PIDNS_DEPTH && ns; i++) {
		__u32 inum = ns->ns.inum;
		if (bpf_map_lookup_elem(&watched, &inum))
			return 1;
		ns = ns->parent;
	}
	return 0;
}

// read_stamp reads size, mtime and ctime by their names in the running
// kernel (CO-RE): i_{m,c}time_{sec,nsec} (6.11+), __i_{m,c}time (6.6-6.10),
// i_{m,c}time (older). Only the 6.11+ layout is tested (6.18).
static __always_inline void read_stamp(struct inode *inode, struct stamp *st)
{
	struct inode___v66 *v66 = (void *)inode;
	struct inode___v65 *v65 = (void *)inode;
	st->size = BPF_CORE_READ(inode, i_size);
	if (bpf_core_field_exists(inode->i_mtime_sec)) {
		st->mtime_sec = BPF_CORE_READ(inode, i_mtime_sec);
		st->mtime_nsec = BPF_CORE_READ(inode, i_mtime_nsec);
	} else if (bpf_core_field_exists(v66->__i_mtime)) {
		st->mtime_sec = BPF_CORE_READ(v66, __i_mtime.tv_sec);
		st->mtime_nsec = BPF_CORE_READ(v66, __i_mtime.tv_nsec);
	} else {
		st->mtime_sec = BPF_CORE_READ(v65, i_mtime.tv_sec);
		st->mtime_nsec = BPF_CORE_READ(v65, i_mtime.tv_nsec);
	}
	if (bpf_core_field_exists(inode->i_ctime_sec)) {
		st->ctime_sec = BPF_CORE_READ(inode, i_ctime_sec);
		// 6.13+ keeps I_CTIME_QUERIED (bit 31) in i_ctime_nsec
		st->ctime_nsec = BPF_CORE_READ(inode, i_ctime_nsec) & NSEC_MASK;
	} else if (bpf_core_field_exists(v66->__i_ctime)) {
		st->ctime_sec = BPF_CORE_READ(v66, __i_ctime.tv_sec);
		st->ctime_nsec = BPF_CORE_READ(v66, __i_ctime.tv_nsec);
	} else {
		st->ctime_sec = BPF_CORE_READ(v65, i_ctime.tv_sec);
		st->ctime_nsec = BPF_CORE_READ(v65, i_ctime.tv_nsec);
	}
}

// The inode fields read on every mapping, in one probe read where the
// running kernel keeps them within CHUNK bytes from i_sb (6.11+: 84
// bytes), else one read each. The offsets are CO-RE constants, so the
// verifier keeps only one of the two paths.
#define CHUNK 96
#define OFF(f) bpf_core_field_offset(struct inode, f)
#define IN_CHUNK(f) (OFF(f) >= OFF(i_sb) && OFF(f) + bpf_core_field_size(struct inode, f) <= OFF(i_sb) + CHUNK)
#define AT(T, f) (*(T *)(buf + (OFF(f) - OFF(i_sb))))

static __always_inline int read_inode(struct inode *inode, struct key *k, struct stamp *st)
{
	struct super_block *sb;
	if (bpf_core_field_exists(inode->i_ctime_sec) && IN_CHUNK(i_ino) && IN_CHUNK(i_size) &&
	    IN_CHUNK(i_mtime_sec) && IN_CHUNK(i_ctime_sec) && IN_CHUNK(i_mtime_nsec) && IN_CHUNK(i_ctime_nsec) &&
	    bpf_core_field_size(struct inode, i_ino) == 8 && bpf_core_field_size(struct inode, i_size) == 8 &&
	    bpf_core_field_size(struct inode, i_mtime_sec) == 8 && bpf_core_field_size(struct inode, i_mtime_nsec) == 4) {
		__u8 buf[CHUNK];
		if (bpf_probe_read_kernel(buf, CHUNK, (void *)inode + OFF(i_sb)))
			return -1;
		sb = AT(struct super_block *, i_sb);
		k->ino = AT(__u64, i_ino);
		st->size = AT(__s64, i_size);
		st->mtime_sec = AT(__s64, i_mtime_sec);
		st->ctime_sec = AT(__s64, i_ctime_sec);
		st->mtime_nsec = AT(__u32, i_mtime_nsec);
		st->ctime_nsec = AT(__u32, i_ctime_nsec) & NSEC_MASK;
	} else {
		sb = BPF_CORE_READ(inode, i_sb);
		k->ino = BPF_CORE_READ(inode, i_ino);
		read_stamp(inode, st);
	}
	k->dev = BPF_CORE_READ(sb, s_dev);
	return 0;
}

static __always_inline int same_stamp(const struct stamp *a, const struct stamp *b)
{
	return a->size == b->size && a->mtime_sec == b->mtime_sec && a->ctime_sec == b->ctime_sec &&
	       a->mtime_nsec == b->mtime_nsec && a->ctime_nsec == b->ctime_nsec;
}

// begin: a mapping of file with PROT_EXEC is starting; unless its key and
// stamp were reported already, remember it until the system call returns.
static __always_inline void begin(struct task_struct *task, struct inode *inode, struct event *ev)
{
	if (read_inode(inode, &ev->key, &ev->stamp))
		return;
	ev->key.mntns = task->nsproxy->mnt_ns->ns.inum;
	struct stamp *old = bpf_map_lookup_elem(&seen, &ev->key);
	if (old && same_stamp(old, &ev->stamp))
		return;
	__u64 id = bpf_get_current_pid_tgid();
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->pidns = BPF_CORE_READ(task_pidns(task), ns.inum);
	__sync_fetch_and_add(&npending, 1);
	if (bpf_map_update_elem(&pending, &id, ev, BPF_ANY)) {
		__sync_fetch_and_add(&npending, -1);
		count_lost(ev->key.mntns);
	}
}

SEC("tracepoint/syscalls/sys_enter_mmap")
int enter_mmap(struct sys_enter_ctx *ctx)
{
	__u64 prot = ctx->args[2], flags = ctx->args[3];
	__s32 fd = (__s32)ctx->args[4];
	if (!(prot & PROT_EXEC) || (flags & MAP_ANONYMOUS) || fd < 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (!wanted(task))
		return 0;
	struct fdtable *fdt = task->files->fdt;
	if ((__u32)fd >= fdt->max_fds)
		return 0;
	struct file **fds = fdt->fd;
	struct file *file = NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return 0;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	if (!inode)
		return 0;
	struct event ev = {
		.kind = KIND_MMAP,
		.len = ctx->args[1],
		.fd = fd,
		.prot = (__u32)prot,
	};
	begin(task, inode, &ev);
	return 0;
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

static __always_inline int mprotect(struct sys_enter_ctx *ctx)
{
	__u64 addr = ctx->args[0], prot = ctx->args[2];
	if (!(prot & PROT_EXEC))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (!wanted(task))
		return 0;
	struct vma_ctx c = {};
	long err = bpf_find_vma(task, addr, vma_cb, &c, 0);
	if (err == -2) // ENOENT: no mapping there, mprotect fails too
		return 0;
	if (err) { // EBUSY: mmap_lock contended; we cannot tell what this was
		count_lost(task->nsproxy->mnt_ns->ns.inum);
		return 0;
	}
	// Only a file mapping that becomes executable, as IMA's file_mprotect.
	struct file *file = c.file; // (BPF_CORE_READ(c.file) would relocate vma_ctx)
	if (!file || (c.flags & VM_EXEC))
		return 0;
	// The vma of an overlayfs file holds the real file (a backing file):
	// report the file the task mapped, as mmap does (and as
	// /proc/PID/map_files opens it).
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	if (fmode_backing && (BPF_CORE_READ(file, f_mode) & fmode_backing)) {
		// Checked: the user file of the two stacking file systems
		// that have backing files (a wrong FMODE_BACKING bit for an
		// unusual kernel then changes nothing).
		struct inode *user = BPF_CORE_READ((struct backing_file *)file, user_path.dentry, d_inode);
		unsigned long magic = BPF_CORE_READ(user, i_sb, s_magic);
		if (user && (magic == OVERLAYFS_SUPER_MAGIC || magic == FUSE_SUPER_MAGIC))
			inode = user;
	}
	if (!inode)
		return 0;
	struct event ev = {
		.kind = KIND_MPROTECT,
		.addr = addr,
		.len = ctx->args[1],
		.fd = -1,
		.prot = (__u32)prot,
	};
	begin(task, inode, &ev);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mprotect")
int enter_mprotect(struct sys_enter_ctx *ctx) { return mprotect(ctx); }

SEC("tracepoint/syscalls/sys_enter_pkey_mprotect")
int enter_pkey_mprotect(struct sys_enter_ctx *ctx) { return mprotect(ctx); }

// exit: the system call of a pending mapping returned; report it if it
// succeeded, and remember it as reported only once the event is in the
// ring buffer.
SEC("tracepoint/syscalls/sys_exit")
int exit_map(struct sys_exit_ctx *ctx)
{
	if (!npending)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct event *p = bpf_map_lookup_elem(&pending, &id);
	if (!p)
		return 0;
	struct event ev = *p;
	if (!bpf_map_delete_elem(&pending, &id))
		__sync_fetch_and_add(&npending, -1);
	long ret = ctx->ret;
	if (ret < 0 && ret >= -MAX_ERRNO)
		return 0;
	if (ev.kind == KIND_MMAP)
		ev.addr = ret;
	struct event *out = bpf_ringbuf_reserve(&events, sizeof(ev), 0);
	if (!out) {
		count_lost(ev.key.mntns);
		return 0;
	}
	*out = ev;
	bpf_ringbuf_submit(out, 0);
	bpf_map_update_elem(&seen, &ev.key, &ev.stamp, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
