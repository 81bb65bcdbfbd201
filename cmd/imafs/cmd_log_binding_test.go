package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imafs/imafs/kernelsrc"
	"github.com/imafs/imafs/measurelog"
)

func bindingEntry(t *testing.T, template, name, ns string, buf []byte) *measurelog.Entry {
	t.Helper()
	e, err := measurelog.NewEntry(template, 10, measurelog.Measurement{
		FileDigest: measurelog.SHA256.Sum([]byte(name)), FileAlgo: measurelog.SHA256, Name: name, Namespace: ns, Buf: buf,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestLogBinding: imafs log binding accepts a container list that is the
// ima-ng view of the host's ima-nsreg entries and rejects one that is not.
func TestLogBinding(t *testing.T) {
	dir := t.TempDir()
	boot, err := measurelog.NewBootAggregate(measurelog.TemplateIMANSReg, make([]byte, 32), measurelog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	host := []*measurelog.Entry{
		boot,
		bindingEntry(t, measurelog.TemplateIMABuf, "ima_ns_register", "", []byte("c1:4 pid:[4026532100]")),
		bindingEntry(t, measurelog.TemplateIMANSReg, "/bin/sh", "c1:4", nil),
		bindingEntry(t, measurelog.TemplateIMANSReg, "/bin/host", "", nil),
		bindingEntry(t, measurelog.TemplateIMANSReg, "/bin/app", "c1:4", nil),
	}
	var ctr []*measurelog.Entry
	for _, i := range []int{0, 2, 4} {
		v, ok := kernelsrc.ContainerView(host[i])
		if !ok {
			t.Fatal("no view")
		}
		ctr = append(ctr, v)
	}
	write := func(name string, es ...*measurelog.Entry) string {
		var b []byte
		for _, e := range es {
			b = e.AppendBinary(b, measurelog.SHA1)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hostFile, ctrFile := write("host", host...), write("c1", ctr...)
	reordered := write("reordered", ctr[0], ctr[2], ctr[1])
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"bound", []string{"binding", "--id", "c1", hostFile, ctrFile}, 0, "bound: 3 container entries"},
		{"bound, pid namespace", []string{"binding", hostFile, ctrFile, "--id", "c1", "--pid-ns", "pid:[4026532100]"}, 0, "bound"},
		{"other pid namespace", []string{"binding", "--id", "c1", "--pid-ns", "pid:[1]", hostFile, ctrFile}, 1, "not bound"},
		{"reordered", []string{"binding", "--id", "c1", hostFile, reordered}, 1, "is not container entry"},
		{"another id", []string{"binding", "--id", "c2", hostFile, ctrFile}, 1, "has no host entry"},
		{"no id", []string{"binding", hostFile, ctrFile}, 2, "Usage"},
		{"missing file", []string{"binding", "--id", "c1", hostFile, filepath.Join(dir, "nosuch")}, 1, "nosuch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runLog(tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String()+stderr.String(), tc.out) {
				t.Errorf("exit %d, want %d; output %q, want %q in it", code, tc.code, stdout.String()+stderr.String(), tc.out)
			}
		})
	}
}
