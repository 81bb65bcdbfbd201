package kernelsrc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
)

// fakeRegistry mirrors imans.Registry.Record: a container's entry goes to its
// list and to the host's.
type fakeRegistry struct {
	mu         sync.Mutex
	host       *imans.Namespace
	containers map[string]*imans.Namespace
	recorded   int
}

func newFakeRegistry(ids ...string) *fakeRegistry {
	r := &fakeRegistry{
		host:       &imans.Namespace{ID: imans.HostID, List: measurelog.NewList(measurelog.SHA1, measurelog.SHA256)},
		containers: map[string]*imans.Namespace{},
	}
	for _, id := range ids {
		r.containers[id] = &imans.Namespace{ID: id, Init: 1000 + len(r.containers), List: measurelog.NewList(measurelog.SHA1, measurelog.SHA256)}
	}
	return r
}

func (r *fakeRegistry) Host() *imans.Namespace { return r.host }

func (r *fakeRegistry) Get(id string) (*imans.Namespace, bool) {
	if id == imans.HostID {
		return r.host, true
	}
	ns, ok := r.containers[id]
	return ns, ok
}

func (r *fakeRegistry) RecordAll(items []imans.Item) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range items {
		r.recorded++
		it.NS.List.Append(it.Entry)
		if it.NS != r.host {
			h := it.Entry
			if it.Host != nil {
				h = it.Host
			}
			r.host.List.Append(h)
		}
	}
	return nil
}

func (r *fakeRegistry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recorded
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// kernelEntry builds an ima-nsreg entry the way the kernel does for an exec of
// name by a task in the namespace labelled label ("" = host).
func kernelEntry(t *testing.T, name, label string) *measurelog.Entry {
	t.Helper()
	d := sha256.Sum256([]byte("content of " + name))
	e, err := measurelog.NewEntry(measurelog.TemplateIMANSReg, 10, measurelog.Measurement{
		FileDigest: d[:], FileAlgo: measurelog.SHA256, Name: name, Namespace: label,
	})
	if err != nil {
		t.Fatalf("NewEntry(%s, %q): %v", name, label, err)
	}
	return e
}

func binaryList(entries ...*measurelog.Entry) []byte {
	var b []byte
	for _, e := range entries {
		b = e.AppendBinary(b, measurelog.SHA1)
	}
	return b
}

func names(l *measurelog.List) []string {
	var out []string
	for i := 0; i < l.Len(); i++ {
		out = append(out, fmt.Sprintf("%s[%s]", l.Entry(i).Name(), Label(l.Entry(i))))
	}
	return out
}

func TestLabel(t *testing.T) {
	ng, err := measurelog.NewEntry("ima-ng", 10, measurelog.Measurement{FileDigest: make([]byte, 32), FileAlgo: measurelog.SHA256, Name: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		e    *measurelog.Entry
		want string
	}{
		{"tagged", kernelEntry(t, "/bin/sh", "c1"), "c1"},
		{"host: empty ns field", kernelEntry(t, "/bin/sh", ""), ""},
		{"template without ns", ng, ""},
		{"unknown template", &measurelog.Entry{PCR: 10, Template: "nosuch", Fields: [][]byte{[]byte("c1\x00")}}, ""},
		{"ns field missing from data", &measurelog.Entry{PCR: 10, Template: "ima-ns", Fields: [][]byte{[]byte("sha256:\x00")}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Label(tc.e); got != tc.want {
				t.Errorf("Label = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDemultiplex(t *testing.T) {
	boot, err := measurelog.NewBootAggregate(measurelog.TemplateIMANS, make([]byte, 32), measurelog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	stream := []*measurelog.Entry{
		boot,
		kernelEntry(t, "/bin/sh", ""),
		kernelEntry(t, "/bin/sh", "c1"),
		kernelEntry(t, "/bin/sh", "c2"),
		kernelEntry(t, "/usr/bin/only-c1", "c1"),
		kernelEntry(t, "/usr/bin/gone", "detached"),
		kernelEntry(t, "/usr/bin/only-c2", "c2"),
	}
	for _, tc := range []struct {
		name     string
		keepBoot bool
		host     []string
		c1, c2   []string
	}{
		{
			name: "boot_aggregate left to the registry",
			host: []string{"/bin/sh[]", "/bin/sh[c1]", "/bin/sh[c2]", "/usr/bin/only-c1[c1]", "/usr/bin/gone[detached]", "/usr/bin/only-c2[c2]"},
			c1:   []string{"/bin/sh[c1]", "/usr/bin/only-c1[c1]"},
			c2:   []string{"/bin/sh[c2]", "/usr/bin/only-c2[c2]"},
		},
		{
			name: "KeepBootAggregate", keepBoot: true,
			host: []string{"boot_aggregate[]", "/bin/sh[]", "/bin/sh[c1]", "/bin/sh[c2]", "/usr/bin/only-c1[c1]", "/usr/bin/gone[detached]", "/usr/bin/only-c2[c2]"},
			c1:   []string{"/bin/sh[c1]", "/usr/bin/only-c1[c1]"},
			c2:   []string{"/bin/sh[c2]", "/usr/bin/only-c2[c2]"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry("c1", "c2")
			// ContainerNS: the containers' lists take the kernel's entries
			// unchanged (TestVerifyBinding covers the default rendering).
			s := New(reg, Options{KeepBootAggregate: tc.keepBoot, ContainerTemplate: ContainerNS, Log: quietLog()})
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // stop at the first end of stream
			if err := s.tail(ctx, bytes.NewReader(binaryList(stream...))); err != nil {
				t.Fatalf("tail: %v", err)
			}
			for _, l := range []struct {
				who  string
				list *measurelog.List
				want []string
			}{{"host", reg.host.List, tc.host}, {"c1", reg.containers["c1"].List, tc.c1}, {"c2", reg.containers["c2"].List, tc.c2}} {
				if got := names(l.list); fmt.Sprint(got) != fmt.Sprint(l.want) {
					t.Errorf("%s list = %v, want %v", l.who, got, l.want)
				}
			}
			if s.Entries() != uint64(len(stream)) {
				t.Errorf("Entries = %d, want %d", s.Entries(), len(stream))
			}
			if s.Foreign() != 1 {
				t.Errorf("Foreign = %d, want 1 (the detached label)", s.Foreign())
			}
			// Entries reach the lists unchanged: same template data, so the
			// same template digests as in the kernel's list.
			c1 := reg.containers["c1"].List
			for i, want := range []*measurelog.Entry{stream[2], stream[4]} {
				got := c1.Entry(i)
				if !bytes.Equal(got.TemplateData(), want.TemplateData()) || got.Template != want.Template || got.PCR != want.PCR {
					t.Errorf("c1 entry %d changed: %+v, want %+v", i, got, want)
				}
				for _, bank := range []measurelog.Algo{measurelog.SHA1, measurelog.SHA256} {
					if !bytes.Equal(got.TemplateDigest(bank), want.TemplateDigest(bank)) {
						t.Errorf("c1 entry %d %s template digest changed", i, bank)
					}
				}
			}
		})
	}
}

func TestCorruptListStops(t *testing.T) {
	reg := newFakeRegistry("c1")
	s := New(reg, Options{Log: quietLog()})
	data := binaryList(kernelEntry(t, "/a", "c1"))
	bad := append(append([]byte(nil), data...), data...)
	// Second record: template name length far beyond the kernel's limit.
	off := len(data) + 4 + 20
	bad[off], bad[off+1], bad[off+2], bad[off+3] = 0xff, 0xff, 0xff, 0x7f
	err := s.tail(context.Background(), bytes.NewReader(bad))
	var de *measurelog.DecodeError
	if !errors.As(err, &de) || de.Torn {
		t.Fatalf("tail of a corrupt list = %v, want a *DecodeError (not torn)", err)
	}
	if n := reg.containers["c1"].List.Len(); n != 1 {
		t.Errorf("c1 has %d entries, want the 1 before the corruption", n)
	}
}

// TestTailGrowingFile follows a list file while it grows, including a write
// that stops in the middle of a record, as Run does with the kernel's file.
func TestTailGrowingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "binary_runtime_measurements")
	all := []*measurelog.Entry{
		kernelEntry(t, "/bin/a", ""), kernelEntry(t, "/bin/a", "c1"),
		kernelEntry(t, "/bin/b", "c1"), kernelEntry(t, "/bin/c", ""),
	}
	first := binaryList(all[:2]...)
	rest := binaryList(all[2:]...)
	torn := 10 // bytes of the third record written early
	if err := os.WriteFile(path, append(first, rest[:torn]...), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := newFakeRegistry("c1")
	s := New(reg, Options{ListPath: path, MinInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, Log: quietLog()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	waitFor := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for reg.count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("recorded %d entries, want %d", reg.count(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(2)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(rest[torn:]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitFor(4)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := names(reg.containers["c1"].List), []string{"/bin/a[]", "/bin/b[]"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("c1 = %v, want %v", got, want)
	}
	if got := reg.host.List.Len(); got != 4 {
		t.Errorf("host has %d entries, want 4", got)
	}
}

func TestRunMissingList(t *testing.T) {
	s := New(newFakeRegistry(), Options{ListPath: filepath.Join(t.TempDir(), "nosuch"), Log: quietLog()})
	if err := s.Run(context.Background()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Run on a missing list = %v, want ErrNotExist", err)
	}
}

func TestRegistration(t *testing.T) {
	reg := newFakeRegistry("c1")
	c1 := reg.containers["c1"]

	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "namespaces")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		s := New(reg, Options{NamespacesPath: path, Log: quietLog()})
		s.nsFD = fakeNSFD
		s.Attached(c1)
		if got, want := readFile(t, path), "7 c1\n"; got != want {
			t.Errorf("after attach the file holds %q, want %q", got, want)
		}
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		s.Detached(c1)
		if got := readFile(t, path); got != "-c1\n" {
			t.Errorf("after detach the file holds %q, want %q", got, "-c1\n")
		}
	})

	for _, tc := range []struct {
		name   string
		errs   map[string][]error // results per command, in order
		attach bool
		want   []string
	}{
		{name: "attach then detach", attach: true, want: []string{"7 c1\n", "-c1\n"}},
		{
			name:   "stale registration replaced",
			errs:   map[string][]error{"7 c1\n": {syscall.EEXIST, nil}},
			attach: true,
			want:   []string{"7 c1\n", "-c1\n", "7 c1\n", "-c1\n"},
		},
		{
			name: "failed registration is not undone on detach",
			errs: map[string][]error{"7 c1\n": {syscall.ESRCH}},
			want: []string{"7 c1\n"},
		},
		{
			name:   "detach of a vanished registration",
			errs:   map[string][]error{"-c1\n": {syscall.ENOENT}},
			attach: true,
			want:   []string{"7 c1\n", "-c1\n"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(reg, Options{Log: quietLog()})
			s.nsFD = fakeNSFD
			var got []string
			s.writeNS = func(cmd string) error {
				got = append(got, cmd)
				if q := tc.errs[cmd]; len(q) > 0 {
					err := q[0]
					tc.errs[cmd] = q[1:]
					return err
				}
				return nil
			}
			s.Attached(c1)
			s.mu.Lock()
			registered := s.registered["c1"]
			s.mu.Unlock()
			if registered != tc.attach {
				t.Errorf("registered = %v, want %v", registered, tc.attach)
			}
			s.Detached(c1)
			s.Detached(c1) // a second detach writes nothing
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Errorf("commands %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("host and nil are ignored", func(t *testing.T) {
		s := New(reg, Options{Log: quietLog()})
		var got []string
		s.writeNS = func(cmd string) error { got = append(got, cmd); return nil }
		s.Attached(reg.host)
		s.Attached(nil)
		s.Detached(nil)
		if len(got) != 0 {
			t.Errorf("commands %q, want none", got)
		}
	})
}

// fakeNSFD stands for a pid namespace fd: the commands name fd 7.
func fakeNSFD(*imans.Namespace) (int, func(), error) { return 7, func() {}, nil }

func registerRecord(t *testing.T, buf string) *measurelog.Entry {
	t.Helper()
	d := sha256.Sum256([]byte(buf))
	e, err := measurelog.NewEntry(measurelog.TemplateIMABuf, 10, measurelog.Measurement{
		FileDigest: d[:], FileAlgo: measurelog.SHA256, Name: recordRegister, Buf: []byte(buf),
	})
	if err != nil {
		t.Fatalf("NewEntry(ima-buf %q): %v", buf, err)
	}
	return e
}

// TestTags: with the v2 series the kernel tags entries "label:id"; they go
// to the container only under a registration its record names.
func TestTags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		records []string // registration records read before the entry
		tag     string
		want    string
	}{
		{name: "registered id", records: []string{"c1:5 pid:[4026532000]"}, tag: "c1:5", want: "c1"},
		{name: "label reused: the other id is not c1's", records: []string{"c1:5 pid:[4026532000]"}, tag: "c1:9", want: imans.HostID},
		{name: "no record", tag: "c1:5", want: imans.HostID},
		{name: "record of an unattached label", records: []string{"c9:5 pid:[4026532000]"}, tag: "c9:5", want: imans.HostID},
		{name: "malformed record", records: []string{"c1:5"}, tag: "c1:5", want: imans.HostID},
		{name: "v1 bare label", tag: "c1", want: "c1"},
		{name: "host", tag: "", want: imans.HostID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(newFakeRegistry("c1"), Options{Log: quietLog()})
			for _, r := range tc.records {
				s.learn(registerRecord(t, r))
			}
			if got := s.target(kernelEntry(t, "/bin/x", tc.tag)).ID; got != tc.want {
				t.Errorf("entry tagged %q goes to %q, want %q", tc.tag, got, tc.want)
			}
			// The registration records themselves are the host's.
			for _, r := range tc.records {
				if got := s.target(registerRecord(t, r)).ID; got != imans.HostID {
					t.Errorf("registration record %q goes to %q, want the host", r, got)
				}
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
