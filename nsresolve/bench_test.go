package nsresolve

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// cpuTime is the process's user+system CPU time in ns. The machine this
// runs on is shared (load average well above its 2 cores), so wall-clock
// ns/op mostly measures the run queue; cpu-ns/op is the cost itself.
func cpuTime() int64 {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// loop runs f b.N times and reports cpu-ns/op besides ns/op.
func loop(b *testing.B, f func() error) {
	b.Helper()
	start := cpuTime()
	n := 0
	for b.Loop() {
		if err := f(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(n), "cpu-ns/op")
}

// BenchmarkCallerOwner measures one request's resolution: Caller(tid) then
// Owner() with A and C registered, for callers at pid-ns depth 0 (host), 1
// (A), 2 (B, owner A) and 3 (C), with the ancestry and task caches on
// and off.
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
				r := NewResolverWithOptions(ResolverOptions{CacheSize: cache.size, TaskCacheSize: cache.size, ProcOnly: cache.proc})
				defer r.Close()
				b.ReportAllocs()
				loop(b, func() error {
					c, err := r.Caller(caller.pid)
					if err != nil {
						return err
					}
					_, _, err = r.Owner(c, reg)
					return err
				})
			})
		}
	}
}

// BenchmarkCaller is Caller alone (no ancestry), the floor of a resolution:
// uncached through the pidfd ioctls (proc=false) and /proc (proc=true), and
// from the task cache, all fields (cached) and those a list read needs
// (cached-read: no capabilities, no mount namespace; cached-request: the
// same with the ids from the request, as fs asks).
func BenchmarkCaller(b *testing.B) {
	for _, c := range []struct {
		name string
		opts ResolverOptions
		want Want
	}{
		{"proc=false", ResolverOptions{CacheSize: -1, TaskCacheSize: -1}, WantAll},
		{"proc=true", ResolverOptions{CacheSize: -1, ProcOnly: true}, WantAll},
		{"cached", ResolverOptions{}, WantAll},
		{"cached-read", ResolverOptions{}, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := NewResolverWithOptions(c.opts)
			defer r.Close()
			loop(b, func() error {
				_, err := r.CallerWith(os.Getpid(), c.want)
				return err
			})
		})
	}
	// What fs does for a list open: the ids from the request.
	b.Run("cached-request", func(b *testing.B) {
		r := NewResolver()
		defer r.Close()
		loop(b, func() error {
			_, err := r.CallerOfRequest(os.Getpid(), Ids{}, 0)
			return err
		})
	})
}

// BenchmarkPrivileged is the privilege check done at open.
func BenchmarkPrivileged(b *testing.B) {
	r := NewResolver()
	c, err := r.Caller(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	loop(b, func() error {
		_, err := r.Privileged(c, r.HostUserNS())
		return err
	})
}
