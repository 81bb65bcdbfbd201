package daemon

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"time"
)

// waitReady waits for the first line a child process writes on r, the
// read end of its readiness pipe: nil if it starts with "ready" within
// timeout, else an error naming what (e.g. "successor") and pid.
func waitReady(r io.Reader, what string, pid int, timeout time.Duration) error {
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if strings.HasPrefix(line, "ready") {
			ready <- nil
			return
		}
		if err == nil {
			err = fmt.Errorf("it said %q", strings.TrimSpace(line))
		}
		ready <- fmt.Errorf("%s pid %d exited before it was ready (%v)", what, pid, err)
	}()
	select {
	case err := <-ready:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("%s pid %d not ready after %v", what, pid, timeout)
	}
}
