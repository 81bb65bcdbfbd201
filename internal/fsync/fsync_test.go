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
