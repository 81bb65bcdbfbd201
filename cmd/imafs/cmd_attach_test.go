package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBundleConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, config, wantRootfs string
		wantErr                  bool
	}{
		{"relative root", `{"root":{"path":"rootfs"}}`, filepath.Join(dir, "relative-root", "rootfs"), false},
		{"absolute root", `{"root":{"path":"/var/lib/c/merged"}}`, "/var/lib/c/merged", false},
		{"no root", `{"ociVersion":"1.0.2"}`, "", false},
		{"not json", `{`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundle := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			os.MkdirAll(bundle, 0o755)
			os.WriteFile(filepath.Join(bundle, "config.json"), []byte(tt.config), 0o644)
			cfg, rootfs, err := bundleConfig(bundle)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (string(cfg) != tt.config || rootfs != tt.wantRootfs) {
				t.Errorf("got %q, %q; want the config bytes and %q", cfg, rootfs, tt.wantRootfs)
			}
		})
	}
	if _, _, err := bundleConfig(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing bundle: no error")
	}
}
