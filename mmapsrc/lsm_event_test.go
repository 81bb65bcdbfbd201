package mmapsrc

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// lsmEvent turns bpf/lsm.bpf.c's records into Events: the digest cut to
// its algorithm's size and named as IMA names it, the kernel's path, the
// denial, a hash error as Err, and which events the source must open.
func TestLSMEvent(t *testing.T) {
	path := func(s string) (p [4096]int8) {
		for i, c := range []byte(s) {
			p[i] = int8(c)
		}
		return p
	}
	digest := func(n int) (d [64]uint8) {
		for i := 0; i < n; i++ {
			d[i] = uint8(i + 1)
		}
		return d
	}
	for _, tc := range []struct {
		name    string
		r       lsmLsmEvent
		algo    string
		size    int
		path    string
		denied  bool
		resolve bool
		errno   error
	}{
		{"mmap sha256", lsmLsmEvent{Kind: uint32(Mmap), Flags: flagDigest | flagPath, Algo: 4, Digest: digest(32), Path: path("/usr/lib/libc.so.6")},
			"sha256", 32, "/usr/lib/libc.so.6", false, false, nil},
		{"mmap sha1 denied", lsmLsmEvent{Kind: uint32(Mmap), Flags: flagDigest | flagPath | flagDenied, Algo: 2, Digest: digest(20), Path: path("/lib/x.so")},
			"sha1", 20, "/lib/x.so", true, false, nil},
		{"mmap sha512", lsmLsmEvent{Kind: uint32(Mmap), Flags: flagDigest, Algo: 6, Digest: digest(64)}, "sha512", 64, "", false, false, nil},
		{"mmap hash failed", lsmLsmEvent{Kind: uint32(Mmap), Flags: flagPath | flagDenied, HashErr: -int32(unix.EOPNOTSUPP), Path: path("/a")},
			"", 0, "/a", true, false, unix.EOPNOTSUPP},
		{"mprotect cached digest: opened for the path", lsmLsmEvent{Kind: uint32(Mprotect), Flags: flagDigest, Algo: 4, Digest: digest(32), Addr: 0x1000},
			"sha256", 32, "", false, true, nil},
		{"mprotect without digest: opened to hash", lsmLsmEvent{Kind: uint32(Mprotect), Flags: flagDenied, Addr: 0x1000}, "", 0, "", true, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, resolve := lsmEvent(&tc.r)
			if ev.DigestAlgo != tc.algo || len(ev.Digest) != tc.size || ev.Path != tc.path || ev.Denied != tc.denied || resolve != tc.resolve || ev.Fd != -1 {
				t.Errorf("got %s:%x path %q denied %v resolve %v fd %d; want %s, %d bytes, %q, %v, %v",
					ev.DigestAlgo, ev.Digest, ev.Path, ev.Denied, resolve, ev.Fd, tc.algo, tc.size, tc.path, tc.denied, tc.resolve)
			}
			if tc.size > 0 && !bytes.Equal(ev.Digest, tc.r.Digest[:tc.size]) {
				t.Errorf("digest %x, want %x", ev.Digest, tc.r.Digest[:tc.size])
			}
			if (tc.errno == nil) != (ev.Err == nil) || (tc.errno != nil && !errors.Is(ev.Err, tc.errno)) {
				t.Errorf("err %v, want %v", ev.Err, tc.errno)
			}
		})
	}
	if _, ok := hashAlgoID("sha256"); !ok || len(hashAlgos) != 20 {
		t.Errorf("hash algorithms table: %d entries", len(hashAlgos))
	}
}
