package fanotify_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
)

// mmapRecorder is an fanotify.MmapAppraiser that records what the engine
// tells it (the daemon's mmap source allows the digests in the kernel; see
// internal/daemon TestGuestDaemonAppraise for that, in QEMU).
type mmapRecorder struct {
	mu          sync.Mutex
	enforces    bool
	verified    map[[32]byte]int // sha256 → calls
	failed      map[uint64]string
	invalidated int
}

func (r *mmapRecorder) Enforces(*imans.Namespace) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.enforces
}

func (r *mmapRecorder) KernelAlgo() measurelog.Algo { return measurelog.SHA256 }

func (r *mmapRecorder) Verified(_ *imans.Namespace, _, _ uint64, algos []measurelog.Algo, digests [][]byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, a := range algos {
		if a == measurelog.SHA256 {
			r.verified[[32]byte(digests[i])]++
		}
	}
	return true
}

func (r *mmapRecorder) Failed(_ *imans.Namespace, _, ino uint64, cause string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed[ino] = cause
}

func (r *mmapRecorder) Invalidated(*imans.Namespace) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.invalidated++
}

func (r *mmapRecorder) state(sum [32]byte, ino uint64) (verified int, cause string, invalidated int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.verified[sum], r.failed[ino], r.invalidated
}

// TestMmapAppraiseAtOpen: with `appraise func=MMAP_CHECK`, the engine
// appraises each file at its open (and an exec'd binary at its exec) for
// its executable mappings, without refusing the open: the digest of a file
// whose security.ima verifies is passed on, a failure with the kernel's
// cause; once per version; nothing while the mappings are not enforced.
func TestMmapAppraiseAtOpen(t *testing.T) {
	rec := &mmapRecorder{verified: map[[32]byte]int{}, failed: map[uint64]string{}}
	e := newEnv(t, fanotify.Options{Mmap: rec})
	c := e.container("mm1", "cat")
	files := map[string][]byte{"/good.so": []byte("good library"), "/bad.so": []byte("bad library"), "/none.so": []byte("no xattr")}
	xattrs := map[string][]byte{"/good.so": imaHash(files["/good.so"]), "/bad.so": imaHash([]byte("something else"))}
	inos := writeWithXattrs(t, c, files, xattrs)
	bb, err := os.ReadFile(c.path("/bin/cat"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(c.path("/bin/cat"), "security.ima", imaHash(bb), 0); err != nil {
		t.Fatal(err)
	}

	// Not enforced: the rule alone does nothing at the open.
	c.setPolicy("appraise func=MMAP_CHECK\n")
	c.mustExec("/bin/cat", "/good.so", "/none.so")
	if v, cause, _ := rec.state(sha256.Sum256(files["/good.so"]), inos["/none.so"]); v != 0 || cause != "" {
		t.Fatalf("not enforced: verified %d, cause %q; want nothing", v, cause)
	}

	rec.mu.Lock()
	rec.enforces = true
	rec.mu.Unlock()
	_, _, inv0 := rec.state([32]byte{}, 0)
	e.eng.Invalidate(c.ns)
	for range 2 { // the second time from the cache: no second call
		c.mustExec("/bin/cat", "/good.so", "/bad.so", "/none.so")
	}
	tests := []struct {
		name     string
		verified int
		cause    string
	}{
		{"/good.so", 1, ""},
		{"/bad.so", 0, "invalid-hash"},
		{"/none.so", 0, "missing-hash"},
	}
	for _, tt := range tests {
		v, cause, _ := rec.state(sha256.Sum256(files[tt.name]), inos[tt.name])
		if v != tt.verified || cause != tt.cause {
			t.Errorf("%s: verified %d times, cause %q; want %d, %q", tt.name, v, cause, tt.verified, tt.cause)
		}
	}
	if v, _, inv := rec.state(sha256.Sum256(bb), 0); v != 1 || inv <= inv0 {
		t.Errorf("exec'd binary verified %d times (want 1), invalidated %d -> %d (want more)", v, inv0, inv)
	}

	// A new version is appraised again at its next open.
	changed := []byte("good library, rewritten")
	if err := os.WriteFile(c.path("/good.so"), changed, 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustExec("/bin/cat", "/good.so")
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, cause, _ := rec.state([32]byte{}, inos["/good.so"])
		if cause == "invalid-hash" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rewritten /good.so: cause %q, want invalid-hash", cause)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeWithXattrs writes files into the container with their security.ima
// (xattrs; none when absent) and returns their inode numbers.
func writeWithXattrs(t *testing.T, c *container, files, xattrs map[string][]byte) map[string]uint64 {
	t.Helper()
	inos := map[string]uint64{}
	for name, data := range files {
		if err := os.WriteFile(c.path(name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if x := xattrs[name]; x != nil {
			if err := unix.Setxattr(c.path(name), "security.ima", x, 0); err != nil {
				t.Skipf("security.ima on tmpfs: %v", err)
			}
		}
		var st unix.Stat_t
		if err := unix.Stat(c.path(name), &st); err != nil {
			t.Fatal(err)
		}
		inos[name] = st.Ino
	}
	return inos
}

// imaHash is a security.ima hash value (IMA_XATTR_DIGEST_NG, sha256).
func imaHash(data []byte) []byte {
	sum := sha256.Sum256(data)
	return append([]byte{0x04, 0x04}, sum[:]...)
}

// TestMmapAppraiseSigRequired: the MMAP_CHECK rule's own requirements
// apply (appraise_type=imasig: a hash is not enough), not the open's.
func TestMmapAppraiseSigRequired(t *testing.T) {
	rec := &mmapRecorder{enforces: true, verified: map[[32]byte]int{}, failed: map[uint64]string{}}
	e := newEnv(t, fanotify.Options{Mmap: rec})
	c := e.container("mm2", "cat")
	data := []byte("hashed, not signed")
	inos := writeWithXattrs(t, c, map[string][]byte{"/lib.so": data}, map[string][]byte{"/lib.so": imaHash(data)})
	c.setPolicy("measure func=FILE_CHECK mask=MAY_READ\nappraise func=MMAP_CHECK appraise_type=imasig\n")
	c.mustExec("/bin/cat", "/lib.so")
	v, cause, _ := rec.state(sha256.Sum256(data), inos["/lib.so"])
	if v != 0 || cause != "IMA-signature-required" {
		t.Errorf("verified %d times, cause %q; want 0, IMA-signature-required", v, cause)
	}
	if got := named(c.ns.List, "/lib.so"); len(got) != 1 || fileDigest(t, got[0]) != fmt.Sprintf("%x", sha256.Sum256(data)) {
		t.Errorf("the open's own FILE_CHECK measurement: %d entries, want 1 with the file's sha256", len(got))
	}
}
