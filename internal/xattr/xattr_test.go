package xattr

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGet: values smaller and larger than the first buffer come back
// whole; a missing attribute is ENODATA.
func TestGet(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tt := range []struct {
		name string
		size int
	}{{"user.small", 3}, {"user.exact", 512}, {"user.large", 3000}} {
		want := bytes.Repeat([]byte{'v'}, tt.size)
		if err := unix.Setxattr(p, tt.name, want, 0); err != nil {
			t.Skipf("no user xattrs on %s: %v", p, err)
		}
		got, err := Get(int(f.Fd()), tt.name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, %v; want %d bytes", tt.name, len(got), err, tt.size)
		}
	}
	if _, err := Get(int(f.Fd()), "user.missing"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("missing attribute: %v, want ENODATA", err)
	}
}
