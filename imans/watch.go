package imans

import (
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// watcher reports container inits that exit: one epoll loop over the pinned
// pidfds (a pidfd polls readable once its process has exited), so a thousand
// containers cost one goroutine, not a thousand blocked threads.
type watcher struct {
	epfd   int
	wakefd int // eventfd: wakes the loop to stop
	onExit func(id string)
	log    *logrus.Logger

	mu sync.Mutex
	// Epoll reports a watch by its token, not its fd: an event still in
	// a batch after its pidfd was removed and closed must not be taken
	// for a new watch that reuses the fd number.
	watches map[int32]watched // token → watch
	tokens  map[int]int32     // pidfd → token
	next    int32             // last token given out (0 is the wake eventfd)
	done    chan struct{}
}

type watched struct {
	pidfd int
	id    string
}

func newWatcher(onExit func(id string), log *logrus.Logger) (*watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("init watcher: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("init watcher: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: 0}); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("init watcher: epoll add eventfd: %w", err)
	}
	w := &watcher{epfd: epfd, wakefd: wakefd, onExit: onExit, log: log,
		watches: map[int32]watched{}, tokens: map[int]int32{}, done: make(chan struct{})}
	go w.loop()
	return w, nil
}

func (w *watcher) add(pidfd int, id string) error {
	if pidfd < 0 {
		return fmt.Errorf("no pidfd")
	}
	w.mu.Lock()
	w.next++
	if w.next <= 0 {
		w.next = 1
	}
	token := w.next
	w.watches[token] = watched{pidfd: pidfd, id: id}
	w.tokens[pidfd] = token
	w.mu.Unlock()
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, pidfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: token}); err != nil {
		w.mu.Lock()
		delete(w.watches, token)
		delete(w.tokens, pidfd)
		w.mu.Unlock()
		return fmt.Errorf("epoll add pidfd %d: %w", pidfd, err)
	}
	return nil
}

// remove stops watching pidfd; it must be called before pidfd is closed.
func (w *watcher) remove(pidfd int) {
	if pidfd < 0 {
		return
	}
	w.mu.Lock()
	if token, ok := w.tokens[pidfd]; ok {
		delete(w.watches, token)
		delete(w.tokens, pidfd)
	}
	w.mu.Unlock()
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, pidfd, nil)
}

func (w *watcher) loop() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 32)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			w.log.WithError(err).Error("init watcher: epoll_wait")
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == 0 {
				return // the wake eventfd
			}
			w.mu.Lock()
			wd, ok := w.watches[ev.Fd]
			if ok {
				delete(w.watches, ev.Fd)
				delete(w.tokens, wd.pidfd)
				// Stop level-triggered repeats; Detach closes the pidfd
				// later (and remove, finding no token, only repeats this).
				_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, wd.pidfd, nil)
			}
			w.mu.Unlock()
			if !ok {
				continue
			}
			go w.onExit(wd.id)
		}
	}
}

func (w *watcher) close() error {
	var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if _, err := unix.Write(w.wakefd, one); err != nil {
		return fmt.Errorf("init watcher: wake: %w", err)
	}
	<-w.done
	unix.Close(w.wakefd)
	return unix.Close(w.epfd)
}
