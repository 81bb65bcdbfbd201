package daemon

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestWaitReady(t *testing.T) {
	blocked, w := io.Pipe() // never written: the child neither says ready nor exits
	defer w.Close()
	for _, tc := range []struct {
		name string
		r    io.Reader
		want string // "" = ready
	}{
		{"keeper", strings.NewReader("ready\n"), ""},
		{"successor", strings.NewReader("ready 42\n"), ""},
		{"exited", strings.NewReader(""), "exited before it was ready (EOF)"},
		{"other line", strings.NewReader("busy\n"), `exited before it was ready (it said "busy")`},
		{"silent", blocked, "not ready after 50ms"},
	} {
		err := waitReady(tc.r, "child", 7, 50*time.Millisecond)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want ready", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), "child pid 7 "+tc.want)):
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
