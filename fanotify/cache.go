package fanotify

import (
	"sync"

	"golang.org/x/sys/unix"
)

// maxCache bounds the per-container file cache.
const maxCache = 1 << 17

// inoKey identifies an inode.
type inoKey struct{ dev, ino uint64 }

// fileState is what a container already did with one version of a file
// (same inode, change time, modification time and size).
type fileState struct {
	ctime, mtime unix.Timespec
	size         int64
	measured     map[uint32]bool // by PCR, as the kernel's measured_pcrs
	appraised    bool            // appraisal ran
	appraisedSig bool            // ... and was satisfied by a signature
	appraiseErr  error           // ... and failed with this
	audited      bool
	mmapChecked  bool // appraised for MMAP_CHECK (MmapAppraiser told)
}

func (fs *fileState) same(st *unix.Stat_t) bool {
	return fs.ctime == st.Ctim && fs.mtime == st.Mtim && fs.size == st.Size
}

// fileCache is one container's memory of its files, as the kernel keeps
// flags in each inode's integrity cache: what was done with which version
// of a file, and how many opens hold it for write (open_writers). Both are
// bounded: when full, a map is forgotten, as the kernel forgets an evicted
// inode's state (a file is then hashed again; the list drops the
// duplicate).
type fileCache struct {
	mu      sync.Mutex
	gen     uint64 // the watch's generation of the last reset
	files   map[inoKey]*fileState
	writers map[inoKey]int
}

func newFileCache() *fileCache {
	return &fileCache{files: map[inoKey]*fileState{}, writers: map[inoKey]int{}}
}

// reset forgets every file's state (the policy or the keys changed: the
// watch's generation is now gen); the open writers stay.
func (c *fileCache) reset(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen = gen
	c.files = map[inoKey]*fileState{}
}

// openWrite counts a write open of k and reports whether this version of
// the file (st) was measured.
func (c *fileCache) openWrite(k inoKey, st *unix.Stat_t) (measured bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.writers) >= maxCache {
		c.writers = map[inoKey]int{} // closes were missed (overflow)
	}
	c.writers[k]++
	fs := c.files[k]
	return fs != nil && fs.same(st) && len(fs.measured) > 0
}

// closeWrite counts down the write opens of k.
func (c *fileCache) closeWrite(k inoKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writers[k] > 1 {
		c.writers[k]--
	} else {
		delete(c.writers, k)
	}
}

// fileRef is a looked-up file state, for updates after the work is done.
type fileRef struct {
	c   *fileCache
	fs  *fileState
	gen uint64
}

// with runs f on the state of this version (st) of file k, a fresh one
// when the file changed, under the cache's lock; it returns the state for
// later updates, which apply only while the cache is at generation gen (the
// one the decision was made in), and the file's open writers.
func (c *fileCache) with(k inoKey, st *unix.Stat_t, gen uint64, f func(*fileState)) (fileRef, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.files) >= maxCache {
		c.files = map[inoKey]*fileState{}
	}
	fs := c.files[k]
	if fs == nil || !fs.same(st) {
		fs = &fileState{ctime: st.Ctim, mtime: st.Mtim, size: st.Size, measured: map[uint32]bool{}}
		c.files[k] = fs
	}
	f(fs)
	return fileRef{c: c, fs: fs, gen: gen}, c.writers[k]
}

// update runs f on the state unless the cache was reset since the decision.
func (r fileRef) update(f func(*fileState)) {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	if r.c.gen == r.gen {
		f(r.fs)
	}
}
