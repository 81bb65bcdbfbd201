package main

import (
	"os"
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
