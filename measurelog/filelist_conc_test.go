package measurelog

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestJournalListConcurrent: readers of a journal-backed list, while one
// writer appends (record written to the journal first, then AppendAt),
// always read a prefix of the final rendering: never a partial entry,
// never bytes that change later.
func TestJournalListConcurrent(t *testing.T) {
	const n = 3000
	path := filepath.Join(t.TempDir(), "j")
	w, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	l := NewJournalList(r)
	want := NewList()
	entries := make([]*Entry, n)
	for i := range entries {
		entries[i] = testEntry(t, i)
		want.Append(entries[i])
	}
	final := readAll(t, want, ASCII, SHA256, 1<<20)
	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan string, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 5000)
			for {
				select {
				case <-done:
					return
				default:
				}
				size := l.Size(ASCII, SHA256)
				off := size / 2
				k, err := l.ReadAt(buf, off, ASCII, SHA256)
				if err != nil && err != io.EOF {
					errs <- err.Error()
					return
				}
				if !bytes.Equal(buf[:k], final[off:off+int64(k)]) {
					errs <- "read bytes that are not the final rendering's"
					return
				}
			}
		}()
	}
	off := int64(0)
	for _, e := range entries {
		rec := e.AppendBinary(nil, SHA1)
		if _, err := w.WriteAt(rec, off); err != nil {
			t.Fatal(err)
		}
		l.AppendAt(e, off)
		off += int64(len(rec))
	}
	close(done)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	if got := readAll(t, l, ASCII, SHA256, 1<<20); !bytes.Equal(got, final) {
		t.Error("final rendering differs")
	}
}
