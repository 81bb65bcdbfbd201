package nsresolve

import (
	"fmt"
	"os"
	"testing"
)

// BenchmarkCallerOwner measures one request's resolution: Caller(tid) then
// Owner() with A and C registered, for callers at pid-ns depth 0 (host), 1
// (A), 2 (B, owner A) and 3 (C), with the ancestry cache on and off.
func BenchmarkCallerOwner(b *testing.B) {
	w := newWorld(b)
	reg := w.registered(b, "A,C")
	for _, cache := range []struct {
		name string
		size int
		proc bool
	}{{"cached", 0, false}, {"uncached", -1, false}, {"proc-cached", 0, true}, {"proc-uncached", -1, true}} {
		for _, caller := range []struct {
			name string
			pid  int
		}{{"host", os.Getpid()}, {"depth1", w.a.Pid}, {"depth2", w.b.Pid}, {"depth3", w.c.Pid}} {
			b.Run(fmt.Sprintf("%s/%s", cache.name, caller.name), func(b *testing.B) {
				r := NewResolverWithOptions(ResolverOptions{CacheSize: cache.size, ProcOnly: cache.proc})
				defer r.Close()
				b.ReportAllocs()
				for b.Loop() {
					c, err := r.Caller(caller.pid)
					if err != nil {
						b.Fatal(err)
					}
					if _, _, err := r.Owner(c, reg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkCaller is Caller alone (no ancestry), the floor of a resolution.
func BenchmarkCaller(b *testing.B) {
	for _, proc := range []bool{false, true} {
		b.Run(fmt.Sprintf("proc=%v", proc), func(b *testing.B) {
			r := NewResolverWithOptions(ResolverOptions{CacheSize: -1, ProcOnly: proc})
			for b.Loop() {
				if _, err := r.Caller(os.Getpid()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPrivileged is the privilege check done at open.
func BenchmarkPrivileged(b *testing.B) {
	r := NewResolver()
	c, err := r.Caller(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := r.Privileged(c, r.HostUserNS()); err != nil {
			b.Fatal(err)
		}
	}
}
