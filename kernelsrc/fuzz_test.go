package kernelsrc

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/imafs/imafs/measurelog"
)

// FuzzTail: whatever the list holds, tailing it neither panics nor records
// anything but whole entries.
func FuzzTail(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "ima-ns-6.12", "binary_runtime_measurements")); err == nil {
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{10, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		reg := newFakeRegistry("k1", "c1")
		s := New(reg, Options{Log: quietLog()})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.tail(ctx, bytes.NewReader(data))
		if got := uint64(reg.count()); got > s.Entries() {
			t.Fatalf("recorded %d entries of %d read", got, s.Entries())
		}
		for _, id := range []string{"k1", "c1"} {
			l := reg.containers[id].List
			for i := 0; i < l.Len(); i++ {
				// The ima-ng view has no ns field; an entry that keeps it
				// must be the container's.
				if e := l.Entry(i); Label(e) != id && (Label(e) != "" || hasNS(e)) {
					t.Fatalf("%s list holds an entry labelled %q", id, Label(l.Entry(i)))
				}
			}
		}
	})
}

func hasNS(e *measurelog.Entry) bool {
	t, err := measurelog.LookupTemplate(e.Template)
	return err == nil && slices.Contains(t.Fields, "ns")
}
