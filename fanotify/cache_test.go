package fanotify

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestFileCache: a version of a file keeps what was done with it until it
// changes or the cache is reset; updates of a decision made before a reset
// are dropped; write opens are counted per inode.
func TestFileCache(t *testing.T) {
	c := newFileCache()
	k := inoKey{1, 42}
	v1 := unix.Stat_t{Size: 10, Mtim: unix.Timespec{Sec: 1}}
	v2 := unix.Stat_t{Size: 11, Mtim: unix.Timespec{Sec: 2}}
	measured := func(st *unix.Stat_t, gen uint64) (m bool, ref fileRef, writers int) {
		ref, writers = c.with(k, st, gen, func(fs *fileState) { m = fs.measured[10] })
		return m, ref, writers
	}
	if m, ref, _ := measured(&v1, 0); m {
		t.Fatal("a new file is measured")
	} else {
		ref.update(func(fs *fileState) { fs.measured[10] = true })
	}
	if m, _, _ := measured(&v1, 0); !m {
		t.Error("the same version forgot its measurement")
	}
	if !c.openWrite(k, &v1) || c.openWrite(k, &v2) {
		t.Error("openWrite: measured is about the version opened")
	}
	if _, _, w := measured(&v1, 0); w != 2 {
		t.Errorf("%d writers, want 2", w)
	}
	c.closeWrite(k)
	c.closeWrite(k)
	c.closeWrite(k) // more closes than opens (missed events) stay at 0
	if m, _, w := measured(&v2, 0); m || w != 0 {
		t.Errorf("changed file: measured %v, %d writers; want false, 0", m, w)
	}
	_, stale, _ := measured(&v2, 0)
	c.reset(1)
	stale.update(func(fs *fileState) { fs.audited = true })
	var audited bool
	c.with(k, &v2, 1, func(fs *fileState) { audited = fs.audited })
	if audited {
		t.Error("an update from before the reset was applied")
	}
}
