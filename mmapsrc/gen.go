package mmapsrc

// The BPF objects and their Go loaders are generated from bpf/mmap.bpf.c
// (tracepoints) and bpf/lsm.bpf.c (BPF LSM), which share bpf/common.h, with
// Debian's clang (make bpf) and committed, so a plain go build needs no
// clang. Two objects: the tracepoint one must load on kernels without BPF LSM.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type event -type key -type stamp mmap bpf/mmap.bpf.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type lsm_event -type verdict -type digest_key lsm bpf/lsm.bpf.c -- -I/usr/include/x86_64-linux-gnu
