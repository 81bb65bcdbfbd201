package fsync

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Dir(dir); err != nil {
		t.Errorf("Dir(%s): %v", dir, err)
	}
	missing := filepath.Join(dir, "missing")
	if err := Dir(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Dir(%s): %v, want ErrNotExist", missing, err)
	}
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(path, []byte("data")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "data" {
		t.Errorf("read back %q, %v", b, err)
	}
	if err := WriteFile(filepath.Join(t.TempDir(), "missing", "f"), nil); err == nil {
		t.Error("WriteFile in a missing directory succeeded")
	}
}
