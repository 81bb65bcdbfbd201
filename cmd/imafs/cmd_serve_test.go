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
