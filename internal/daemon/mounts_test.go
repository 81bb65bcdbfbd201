package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRestoreTarget(t *testing.T) {
	self := os.Getpid() // shares the host's root
	tests := []struct {
		recorded, want string
	}{
		{"", SecurityFSTarget},
		{SecurityFSTarget, SecurityFSTarget},
		// Not pivoted (same root as the host): the recorded rootfs path stands.
		{"/var/lib/c/rootfs" + SecurityFSTarget, "/var/lib/c/rootfs" + SecurityFSTarget},
		{"/custom/target", "/custom/target"},
	}
	for _, tt := range tests {
		if got := restoreTarget(self, tt.recorded); got != tt.want {
			t.Errorf("restoreTarget(%q) = %q, want %q", tt.recorded, got, tt.want)
		}
	}
}

func TestTargetFor(t *testing.T) {
	self := os.Getpid()
	// Our root is "/": a rootfs elsewhere means "before pivot_root".
	rootfs := t.TempDir()
	tests := []struct {
		rootfs, target, want string
	}{
		{"", "", SecurityFSTarget},
		{"", "/x/y", "/x/y"},
		{"/", "", SecurityFSTarget},
		{rootfs, "", filepath.Join(rootfs, SecurityFSTarget)},
	}
	for _, tt := range tests {
		got, err := targetFor(self, tt.rootfs, tt.target)
		if err != nil || got != tt.want {
			t.Errorf("targetFor(%q, %q) = %q, %v; want %q", tt.rootfs, tt.target, got, err, tt.want)
		}
	}
	if _, err := targetFor(self, filepath.Join(rootfs, "missing"), ""); err == nil {
		t.Error("missing rootfs: no error")
	}
}
