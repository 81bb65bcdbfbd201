package kernelsrc

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imafs/imafs/measurelog"
)

// TestRealKernelList demultiplexes a list printed by a kernel running the
// series (testdata/ima-ns-6.12/README.md) and checks it against the
// kernel's own ascii rendering of the same list.
func TestRealKernelList(t *testing.T) {
	dir := filepath.Join("testdata", "ima-ns-6.12")
	bin, err := os.ReadFile(filepath.Join(dir, "binary_runtime_measurements"))
	if err != nil {
		t.Fatal(err)
	}
	ascii, err := os.ReadFile(filepath.Join(dir, "ascii_runtime_measurements"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(ascii), "\n")
	if n := len(lines); n > 0 && lines[n-1] == "" {
		lines = lines[:n-1]
	}

	entries, err := measurelog.DecodeBinary(bin, measurelog.SHA1)
	if err != nil {
		t.Fatalf("decode the kernel's binary list: %v", err)
	}
	if len(entries) != len(lines) {
		t.Fatalf("%d binary records, %d ascii lines", len(entries), len(lines))
	}
	// Byte compatibility of the ima-ns template with the kernel, and the
	// label Label reads is the kernel's last ascii field.
	wantByLabel := map[string][]string{}
	for i, e := range entries {
		if got := string(e.AppendASCII(nil, measurelog.SHA1)); got != lines[i] {
			t.Errorf("entry %d renders\n%q\nkernel printed\n%q", i, got, lines[i])
		}
		fields := strings.Split(strings.TrimSuffix(lines[i], "\n"), " ")
		if got, want := Label(e), fields[len(fields)-1]; got != want {
			t.Errorf("entry %d: Label = %q, kernel printed ns %q", i, got, want)
		}
		// The ns field as API.md fixes it: label + NUL, or empty for the host.
		if raw, want := e.Fields[2], fields[len(fields)-1]; want == "" && len(raw) != 0 || want != "" && string(raw) != want+"\x00" {
			t.Errorf("entry %d: ns field data %q for label %q", i, raw, want)
		}
		if i > 0 { // the boot_aggregate is left to the registry
			// A container's list has the ima-ng view of its entries.
			wantByLabel[Label(e)] = append(wantByLabel[Label(e)], string(viewOf(e).AppendASCII(nil, measurelog.SHA1)))
		}
	}

	// k2 is not attached (it was unregistered in the guest): its entries
	// go to the host list only.
	reg := newFakeRegistry("k1")
	s := New(reg, Options{Log: quietLog()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.tail(ctx, bytes.NewReader(bin)); err != nil {
		t.Fatalf("tail: %v", err)
	}
	render := func(l *measurelog.List) []string {
		var out []string
		sc := bufio.NewScanner(strings.NewReader(string(readAll(t, l))))
		for sc.Scan() {
			out = append(out, sc.Text()+"\n")
		}
		return out
	}
	if got, want := render(reg.containers["k1"].List), wantByLabel["k1"]; strings.Join(got, "") != strings.Join(want, "") {
		t.Errorf("k1's list:\n%s\nwant the kernel's k1 lines as ima-ng:\n%s", strings.Join(got, ""), strings.Join(want, ""))
	}
	// k1's list, behind the boot_aggregate the registry gives it, is bound
	// to the kernel's list.
	k1 := []*measurelog.Entry{viewOf(entries[0])}
	for i := 0; i < reg.containers["k1"].List.Len(); i++ {
		k1 = append(k1, reg.containers["k1"].List.Entry(i))
	}
	if err := VerifyBinding(entries, k1, "k1", ""); err != nil {
		t.Errorf("k1's list not bound to the kernel's: %v", err)
	}
	if err := VerifyBinding(entries, k1, "k2", ""); err == nil {
		t.Error("k1's list bound to the kernel's as k2's")
	}
	if got, want := reg.host.List.Len(), len(entries)-1; got != want {
		t.Errorf("host list has %d entries, want %d (all but the kernel's boot_aggregate)", got, want)
	}
	if got, want := s.Foreign(), uint64(len(wantByLabel["k2"])); got != want || want == 0 {
		t.Errorf("Foreign = %d, want %d (k2's entries)", got, want)
	}
}

func readAll(t *testing.T, l *measurelog.List) []byte {
	t.Helper()
	n := l.Size(measurelog.ASCII, measurelog.SHA1)
	buf := make([]byte, n)
	if _, err := l.ReadAt(buf, 0, measurelog.ASCII, measurelog.SHA1); err != nil && int64(len(buf)) != n {
		t.Fatalf("read list: %v", err)
	}
	return buf
}
