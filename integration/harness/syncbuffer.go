package harness

import (
	"bytes"
	"sync"
)

// SyncBuffer is a bytes.Buffer that a test may read (String) while a
// running command's output is copied into it (Write): give it as the
// command's Stdout or Stderr and poll String for what is expected.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
