package main

import (
	"reflect"
	"testing"
)

func TestWithoutFlag(t *testing.T) {
	tests := []struct {
		in, want []string
	}{
		{[]string{"--socket", "s", "--takeover-fd", "3"}, []string{"--socket", "s"}},
		{[]string{"--takeover-fd=3", "--state-dir", "d"}, []string{"--state-dir", "d"}},
		{[]string{"-takeover-fd", "4", "--vtpm", "swtpm"}, []string{"--vtpm", "swtpm"}},
		{[]string{"--mount", "takeover-fd=x"}, []string{"--mount", "takeover-fd=x"}},
		{nil, nil},
	}
	for _, tt := range tests {
		if got := withoutFlag(tt.in, "takeover-fd"); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("withoutFlag(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestServeSourceFlags: --fanotify keeps its bare form (scripts call it)
// and takes auto/true/false; --mmap takes auto/on/off; the defaults are
// auto.
func TestServeSourceFlags(t *testing.T) {
	tests := []struct {
		args           []string
		fanotify, mmap string
		code           int
	}{
		{nil, "auto", "auto", 0},
		{[]string{"--fanotify"}, "on", "auto", 0},
		{[]string{"-fanotify"}, "on", "auto", 0},
		{[]string{"--fanotify=true"}, "on", "auto", 0},
		{[]string{"--fanotify=false", "--mmap", "off"}, "off", "off", 0},
		{[]string{"--fanotify=auto", "--mmap=on"}, "auto", "on", 0},
		{[]string{"--fanotify=maybe"}, "", "", 2},
		{[]string{"--mmap", "sometimes"}, "", "", 2},
		// A bare bool flag does not take the next argument.
		{[]string{"--fanotify", "--socket", "s"}, "on", "auto", 0},
	}
	for _, tt := range tests {
		cfg, log, code := serveConfig(tt.args)
		if code != tt.code || (code == 0) != (log != nil) {
			t.Errorf("serve %q: code %d, want %d", tt.args, code, tt.code)
			continue
		}
		if code != 0 {
			continue
		}
		if cfg.Fanotify.Mode != tt.fanotify || cfg.Mmap.Mode != tt.mmap {
			t.Errorf("serve %q: fanotify %q mmap %q, want %q %q", tt.args, cfg.Fanotify.Mode, cfg.Mmap.Mode, tt.fanotify, tt.mmap)
		}
	}
}
