package mmapsrc

// The BPF object and its Go loader are generated from bpf/mmap.bpf.c with
// Debian's clang (make bpf) and committed, so a plain go build needs no
// clang.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type event -type key -type stamp mmap bpf/mmap.bpf.c -- -I/usr/include/x86_64-linux-gnu
