// SPDX-License-Identifier: GPL-2.0
// common.h: what the tracepoint programs (mmap.bpf.c) and the BPF LSM
// programs (lsm.bpf.c) share: the kernel types they read, the key and
// stamp of a mapped file, the pid namespace filter, the ring buffer and the
// lost counters. Each object has its own copy of the maps.
#ifndef MMAPSRC_COMMON_H
#define MMAPSRC_COMMON_H
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
struct maple_tree { unsigned int ma_flags; } PAI;
struct ma_state { struct maple_tree *tree; } PAI;
struct mm_struct { struct maple_tree mm_mt; } PAI;
struct task_struct {
	struct pid *thread_pid;
	struct nsproxy *nsproxy;
	struct files_struct *files;
	struct mm_struct *mm;
} PAI;
struct super_block {
	__u32 s_dev;
	unsigned long s_magic;
	unsigned long s_iflags;
} PAI;
struct vfsmount { int mnt_flags; } PAI;
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
struct dentry { struct inode *d_inode; } PAI;
struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} PAI;
struct file {
	unsigned int f_mode;
	struct inode *f_inode;
	struct path f_path;
} PAI;
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

const volatile __u32 filter_pidns = 0; // 1: only watched pid namespaces (and descendants)
// FMODE_BACKING of the running kernel (1 << 25 in 6.6-6.11, 1 << 24 from
// 6.12; 0 before 6.6), set by the loader from the kernel's version: it is
// a #define, not in BTF.
const volatile __u32 fmode_backing = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

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

// user_inode is the inode of the file a task mapped, given the file a vma
// holds: for a stacking file system's (overlayfs) backing file, its user
// file, as mmap saw it (and as /proc/PID/map_files opens it).
static __always_inline struct inode *user_inode(struct file *file)
{
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
	return inode;
}

#endif
