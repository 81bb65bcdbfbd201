// SPDX-License-Identifier: GPL-2.0
// mmap.bpf.c: reports executable file mappings (mmap and mprotect/
// pkey_mprotect with PROT_EXEC) once per (device, inode, mount namespace)
// and file version, through a ring buffer. See ../doc.go and
// docs/mmap-source.md. Built by bpf2go (make bpf); the objects are committed.
#include "common.h"

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

// Entries in pending, or more (a hint that lets a system call's exit skip
// the lookup; it is never too low).
__u64 npending = 0;

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
	// report the file the task mapped, as mmap does.
	struct inode *inode = user_inode(file);
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
