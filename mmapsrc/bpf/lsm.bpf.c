// SPDX-License-Identifier: GPL-2.0
// lsm.bpf.c: the BPF LSM mechanism of the mmap source. Before a file is
// mapped executable (security_mmap_file) or a file mapping becomes
// executable (security_file_mprotect), in the task's context: the same pid
// namespace filter and (dev, ino, mount ns, stamp) dedup as mmap.bpf.c, the
// file hashed in the kernel (bpf_ima_file_hash: IMA's algorithm), the
// event with its digest on the ring buffer, and -EACCES when the task's
// mount namespace appraises and the digest is not in the allow map. A
// separate object from mmap.bpf.c, so the tracepoint object still loads on
// kernels without BPF LSM. See docs/mmap-source.md. Built by bpf2go (make
// bpf); the objects are committed.
#include "common.h"
#include <bpf/bpf_tracing.h>

#define EACCES 13
#define DIGEST_MAX 64 // IMA_MAX_DIGEST_SIZE (sha512)
#define PATH_MAX 4096

// lsm_event.flags
#define F_DIGEST 1 // digest (algo) is the file's digest
#define F_DENIED 2 // the mapping was refused (-EACCES)
#define F_PATH 4 // path is the file's path (d_path, as the task sees it)

struct lsm_event {
	struct key key;
	struct stamp stamp;
	__u64 addr; // mprotect: the vma's start; mmap: 0 (no mapping yet)
	__u64 len; // mprotect: the vma's length
	__u32 pid; // thread group id (host)
	__u32 tid;
	__u32 pidns;
	__u32 kind;
	__u32 prot;
	__u32 flags;
	__u32 algo; // enum hash_algo of digest
	__s32 hash_err; // bpf_ima_file_hash's error (F_DIGEST not set)
	__u8 digest[DIGEST_MAX]; // zero beyond the algorithm's size
	char path[PATH_MAX];
};

// For bpf2go (-type lsm_event): a type only used on the ring buffer.
const struct lsm_event *unused_lsm_event __attribute__((unused));

// A file version's cached digest (when V_DIGEST) and whether an allowed
// mapping of it was reported.
#define V_DIGEST 1
struct verdict {
	struct stamp stamp;
	__u32 algo;
	__u16 flags;
	__u16 reported;
	__u8 digest[DIGEST_MAX];
};

// An allowed digest is allowed in one mount namespace: each container
// appraises with its own keys and policy.
struct digest_key {
	__u32 mntns;
	__u32 algo;
	__u8 digest[DIGEST_MAX];
};

// Files seen (key → their version, digest and report state): a mapping of
// a reported version costs one lookup (and, in an appraising namespace, a
// lookup of its digest in allowed).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct key);
	__type(value, struct verdict);
} seen SEC(".maps");

// Mount namespaces (inode → 1) that appraise MMAP_CHECK.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} appraise SEC(".maps");

// Digests the daemon verified ((mount ns, algo, digest) → 1).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct digest_key);
	__type(value, __u8);
} allowed SEC(".maps");

// Mappings refused, in total (index 0).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} denied_total SEC(".maps");

static __always_inline void count_denied(void)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&denied_total, &zero);
	if (v)
		__sync_fetch_and_add(v, 1);
}

// check decides on one executable mapping of file (whose key comes from
// inode) and reports it unless this version was reported already. file is
// hashed only when can_hash (the sleepable mmap_file program; a constant,
// so file_mprotect's program has no call of the sleepable helpers): there
// the digest is the one cached for the version, if any.
static __always_inline int check(struct task_struct *task, struct file *file, struct inode *inode,
				 __u32 kind, __u32 prot, __u64 addr, __u64 len, const int can_hash)
{
	struct key k = {};
	struct stamp st = {};
	struct digest_key dk = {};
	if (read_inode(inode, &k, &st))
		return 0;
	k.mntns = task->nsproxy->mnt_ns->ns.inum;
	dk.mntns = k.mntns;
	int appr = bpf_map_lookup_elem(&appraise, &k.mntns) != NULL;
	int have = 0, reported = 0;
	struct verdict *v = bpf_map_lookup_elem(&seen, &k);
	if (v && same_stamp(&v->stamp, &st)) {
		reported = v->reported;
		if (v->flags & V_DIGEST) {
			dk.algo = v->algo;
			__builtin_memcpy(dk.digest, v->digest, DIGEST_MAX);
			have = 1;
		}
	}
	if (reported && (!appr || (have && bpf_map_lookup_elem(&allowed, &dk))))
		return 0;
	struct lsm_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(k.mntns);
		if (appr)
			count_denied();
		return appr ? -EACCES : 0; // not verified: as IMA, refused
	}
	__u64 id = bpf_get_current_pid_tgid();
	e->key = k;
	e->stamp = st;
	e->addr = addr;
	e->len = len;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->pidns = BPF_CORE_READ(task_pidns(task), ns.inum);
	e->kind = kind;
	e->prot = prot;
	e->flags = 0;
	e->hash_err = 0;
	e->path[0] = 0;
	__builtin_memset(e->digest, 0, DIGEST_MAX);
	if (have) {
		e->algo = dk.algo;
		__builtin_memcpy(e->digest, dk.digest, DIGEST_MAX);
		e->flags |= F_DIGEST;
	} else if (can_hash) {
		long algo = bpf_ima_file_hash(file, e->digest, DIGEST_MAX);
		if (algo >= 0) {
			e->algo = algo;
			e->flags |= F_DIGEST;
			dk.algo = algo;
			__builtin_memcpy(dk.digest, e->digest, DIGEST_MAX);
			have = 1;
		} else {
			e->algo = 0;
			e->hash_err = algo;
		}
	}
	if (can_hash && bpf_d_path(&file->f_path, e->path, PATH_MAX) > 0)
		e->flags |= F_PATH;
	int deny = appr && !(have && bpf_map_lookup_elem(&allowed, &dk));
	if (deny) {
		e->flags |= F_DENIED;
		count_denied();
	}
	bpf_ringbuf_submit(e, 0);
	struct verdict nv = {.stamp = st, .algo = dk.algo, .flags = have ? V_DIGEST : 0, .reported = !deny};
	__builtin_memcpy(nv.digest, dk.digest, DIGEST_MAX);
	bpf_map_update_elem(&seen, &k, &nv, BPF_ANY);
	return deny ? -EACCES : 0;
}

SEC("lsm.s/mmap_file")
int BPF_PROG(mmap_file, struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags, int ret)
{
	if (ret) // refused already
		return ret;
	if (!file || !(prot & PROT_EXEC))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (!wanted(task))
		return 0;
	struct inode *inode = file->f_inode;
	if (!inode)
		return 0;
	return check(task, file, inode, KIND_MMAP, (__u32)prot, 0, 0, 1);
}

// file_mprotect is not a sleepable hook (no bpf_ima_file_hash): the digest
// is the one cached when the version was mapped executable before;
// otherwise the event has none (userspace hashes the mapping) and an
// appraising namespace refuses the call, as IMA refuses every mprotect
// adding PROT_EXEC to an appraised file.
SEC("lsm/file_mprotect")
int BPF_PROG(file_mprotect, struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot, int ret)
{
	if (ret)
		return ret;
	if (!(prot & PROT_EXEC))
		return 0;
	// Only a file mapping that becomes executable, as IMA's file_mprotect.
	struct file *file = vma->vm_file;
	if (!file || (vma->vm_flags & VM_EXEC))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (!wanted(task))
		return 0;
	struct inode *inode = user_inode(file);
	if (!inode)
		return 0;
	return check(task, file, inode, KIND_MPROTECT, (__u32)prot, vma->vm_start, vma->vm_end - vma->vm_start, 0);
}

char LICENSE[] SEC("license") = "GPL";
