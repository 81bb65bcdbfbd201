package fs

import (
	"sync"
	"time"

	"github.com/imafs/imafs/imans"
)

// settleTimeout bounds how long a policy reader or writer waits for the
// RELEASE of a policy writer that was closed (FLUSHed) but not yet released.
//
// The kernel applies a policy write session at the last close of the open
// file (ima_release_policy); FUSE's matching request, RELEASE, is sent
// asynchronously on a plain /dev/fuse mount (fuse_file_release: sync only
// with fc->destroy, fuseblk; never since a 2025 fix), queued as a background
// request before close(2) returns to the writer. So after `echo r >
// policy` the shell's next command can OPEN the policy file before the
// daemon has handled the RELEASE that commits `r`. The RELEASE was queued
// before that OPEN (the closing task queues it on its way out of close(2)),
// so the daemon has it in hand or in its queue: an OPEN or GETATTR of the
// policy waits until no writer of the namespace is in that state, which
// takes microseconds. A writer that FLUSHed and is still open for real (a
// child holding a copy exited, the parent keeps writing) only costs the
// waiter settleTimeout, after which it sees the policy as it is, like the
// kernel, where that session is not applied yet either.
const settleTimeout = 500 * time.Millisecond

// settler tracks the open policy writers of every namespace (a namespace's
// files may be served by several mounts: the container's and the host view).
type settler struct {
	mu      sync.Mutex
	writers map[*imans.Namespace]map[*policyWriter]writerState
	changed chan struct{} // closed and replaced at every change
}

// writerState is what a waiter looks at.
type writerState struct {
	closing bool // FLUSHed since its last write: its RELEASE may be in flight
	dirty   bool // has written since it was opened
}

var writers = &settler{writers: map[*imans.Namespace]map[*policyWriter]writerState{}, changed: make(chan struct{})}

// set records w's state (open: true) or forgets w (open: false).
func (s *settler) set(w *policyWriter, st writerState, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.writers[w.ns]
	switch {
	case open && m == nil:
		m = map[*policyWriter]writerState{}
		s.writers[w.ns] = m
		fallthrough
	case open:
		m[w] = st
	default:
		delete(m, w)
		if len(m) == 0 {
			delete(s.writers, w.ns)
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait returns once no writer of ns satisfies busy, or after settleTimeout.
func (s *settler) wait(ns *imans.Namespace, busy func(writerState) bool) {
	var timer *time.Timer
	for {
		s.mu.Lock()
		pending := false
		for _, st := range s.writers[ns] {
			pending = pending || busy(st)
		}
		ch := s.changed
		s.mu.Unlock()
		if !pending {
			return
		}
		if timer == nil {
			timer = time.NewTimer(settleTimeout)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			return
		}
	}
}

// closingDirty: a writer whose session is about to be applied (readers wait).
func closingDirty(st writerState) bool { return st.closing && st.dirty }

// closing: a writer about to give the writer claim back (writers wait).
func closing(st writerState) bool { return st.closing }
