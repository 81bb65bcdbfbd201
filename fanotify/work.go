package fanotify

// An event's way from a container's queue to its answer.

import (
	"errors"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// event is one permission event on its way to an answer.
type event struct {
	w     *watch
	fd    int
	tid   int
	mask  uint64
	start time.Time
	timer *time.Timer
	once  sync.Once
	done  atomic.Bool
}

// answer responds once; later calls do nothing. reason says why a denial
// (see Answer.Reason).
func (ev *event) answer(allow bool, reason string) {
	ev.once.Do(func() {
		ev.done.Store(true)
		// Counted before the task is released: whoever the task tells
		// about the outcome finds it in Stats and OnAnswer's figures.
		e := ev.w.e
		latency := time.Since(ev.start)
		e.stats.latency.Add(int64(latency))
		if allow {
			reason = ""
			e.stats.allowed.Add(1)
		} else {
			e.stats.denied.Add(1)
		}
		if e.opts.OnAnswer != nil {
			e.opts.OnAnswer(Answer{Namespace: ev.w.ns.ID, Allow: allow, Reason: reason, Latency: latency})
		}
		if err := ev.w.g.respond(int32(ev.fd), allow); err != nil && !errors.Is(err, os.ErrClosed) {
			ev.w.log.WithError(err).Warn("fanotify: respond")
		}
	})
}

// failureMode is the answer to an event that could not be decided: allow
// when the container fails open, deny for reason when it fails closed.
func (w *watch) failureMode(reason string) (allow bool, why string) {
	if w.failClosed() {
		return false, reason
	}
	return true, ""
}

// work decides the container's events until its group is closed and its
// queue drained.
func (w *watch) work() {
	e := w.e
	for ev := range w.queue {
		if w.isClosed() {
			// The group is gone: the kernel allowed its pending events.
			ev.timer.Stop()
			unix.Close(ev.fd)
			continue
		}
		e.sem <- struct{}{}
		// Even when the timeout answered already, handle runs: what could
		// not be measured in time is recorded as a violation.
		allow, reason := w.handle(ev)
		<-e.sem
		ev.answer(allow, reason)
		ev.timer.Stop()
		unix.Close(ev.fd)
	}
}

// isSelf reports whether tid is a thread of this process: the daemon's own
// accesses are allowed at once, never queued behind work that could wait
// on them.
func isSelf(proc string, tid int) bool {
	if tid == os.Getpid() {
		return true
	}
	var st unix.Stat_t
	return unix.Stat(proc+"/self/task/"+strconv.Itoa(tid), &st) == nil
}
