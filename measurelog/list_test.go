package measurelog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// readAll reads a whole rendering through ReadAt in pieces of size step.
func readAll(t *testing.T, l *List, f Format, bank Algo, step int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, step)
	for off := int64(0); ; {
		n, err := l.ReadAt(buf, off, f, bank)
		out = append(out, buf[:n]...)
		off += int64(n)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("ReadAt(%d): %v", off, err)
		}
		if n != len(buf) {
			t.Fatalf("ReadAt(%d) = %d bytes without error, want %d", off, n, len(buf))
		}
	}
}

// TestListGolden appends the kernel's entries to a List and checks every
// rendering, read in pieces of many sizes, against the kernel's files, and
// the counters and PCRs against the kernel's and the TPM's.
func TestListGolden(t *testing.T) {
	renderings := []struct {
		f    Format
		bank Algo
		file string
	}{
		{ASCII, SHA1, "ascii_runtime_measurements"},
		{Binary, SHA1, "binary_runtime_measurements"},
		{ASCII, SHA1, "ascii_runtime_measurements_sha1"},
		{Binary, SHA1, "binary_runtime_measurements_sha1"},
		{ASCII, SHA256, "ascii_runtime_measurements_sha256"},
		{Binary, SHA256, "binary_runtime_measurements_sha256"},
	}
	for _, g := range goldenDirs {
		t.Run(g.name, func(t *testing.T) {
			entries, err := DecodeBinary(readGolden(t, g.name, "binary_runtime_measurements_sha256"), SHA256)
			if err != nil {
				t.Fatal(err)
			}
			l := NewList()
			for i, e := range entries {
				if !l.Append(e) {
					t.Fatalf("entry %d dropped as a duplicate", i)
				}
			}
			count, _ := strconv.Atoi(strings.TrimSpace(string(readGolden(t, g.name, "runtime_measurements_count"))))
			viol, _ := strconv.Atoi(strings.TrimSpace(string(readGolden(t, g.name, "violations"))))
			if l.Len() != count || l.Violations() != int64(viol) {
				t.Errorf("Len %d Violations %d, kernel %d %d", l.Len(), l.Violations(), count, viol)
			}
			for _, r := range renderings {
				want := readGolden(t, g.name, r.file)
				if got := l.Size(r.f, r.bank); got != int64(len(want)) {
					t.Errorf("%s: Size %d, want %d", r.file, got, len(want))
				}
				for _, step := range []int{1, 7, 100, 4096, 1 << 20} {
					if got := readAll(t, l, r.f, r.bank, step); !bytes.Equal(got, want) {
						t.Errorf("%s read in %d-byte pieces differs from the kernel's", r.file, step)
					}
				}
				// Reads at every offset give the file's tail.
				buf := make([]byte, 64)
				for off := 0; off < len(want); off += 13 {
					n, err := l.ReadAt(buf, int64(off), r.f, r.bank)
					if err != nil && err != io.EOF {
						t.Fatal(err)
					}
					if !bytes.Equal(buf[:n], want[off:min(off+64, len(want))]) {
						t.Fatalf("%s at %d: %q", r.file, off, buf[:n])
					}
				}
				if n, err := l.ReadAt(buf, int64(len(want)), r.f, r.bank); n != 0 || err != io.EOF {
					t.Errorf("%s: read at end = %d, %v; want 0, EOF", r.file, n, err)
				}
			}
			for _, b := range []struct {
				algo Algo
				file string
			}{{SHA1, "pcrs-sha1.txt"}, {SHA256, "pcrs-sha256.txt"}} {
				tpm := readPCRFile(t, readGolden(t, g.name, b.file))
				if got := l.PCR(b.algo, 10); !bytes.Equal(got, tpm[10]) {
					t.Errorf("%s PCR-10 = %x, TPM %x", b.algo, got, tpm[10])
				}
			}
			for i, want := range entries {
				got := l.Entry(i)
				if !bytes.Equal(got.AppendBinary(nil, SHA256), want.AppendBinary(nil, SHA256)) || got.Violation != want.Violation {
					t.Errorf("Entry(%d) differs", i)
				}
			}
			if l.Entry(-1) != nil || l.Entry(l.Len()) != nil {
				t.Error("Entry out of range is not nil")
			}
		})
	}
}

func testEntry(t testing.TB, i int) *Entry {
	e, err := NewEntry(TemplateIMANG, DefaultPCR, Measurement{
		FileDigest: SHA256.Sum([]byte(strconv.Itoa(i))), FileAlgo: SHA256,
		Name: fmt.Sprintf("/usr/bin/program-%d", i),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestListDuplicateRule checks the kernel's rule: same template digest and
// PCR as an earlier entry → not added; another PCR or a violation → added.
func TestListDuplicateRule(t *testing.T) {
	l := NewList(SHA384)
	a := testEntry(t, 1)
	b := testEntry(t, 1)
	b.PCR = 11
	v, err := NewViolation(TemplateIMANG, DefaultPCR, "/tmp/x", SHA256)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		e    *Entry
		want bool
	}{
		{"first", a, true},
		{"same digest and pcr", testEntry(t, 1), false},
		{"same digest, other pcr", b, true},
		{"other digest", testEntry(t, 2), true},
		{"violation", v, true},
		{"same violation again", v, true},
		{"first again", a, false},
	}
	for _, s := range steps {
		if got := l.Append(s.e); got != s.want {
			t.Errorf("%s: Append = %v, want %v", s.name, got, s.want)
		}
	}
	if l.Len() != 5 || l.Violations() != 2 {
		t.Errorf("Len %d Violations %d, want 5 2", l.Len(), l.Violations())
	}
	// PCR 10 replays to the same value as the entries Append accepted.
	var kept []*Entry
	for i := 0; i < l.Len(); i++ {
		kept = append(kept, l.Entry(i))
	}
	p := Replay(kept, SHA1, SHA256, SHA384)
	for _, bank := range []Algo{SHA1, SHA256, SHA384} {
		for _, pcr := range []int{10, 11} {
			if !bytes.Equal(l.PCR(bank, pcr), p.Value(bank, pcr)) {
				t.Errorf("%s PCR-%d differs from replay", bank, pcr)
			}
		}
	}
	if got := p.Touched(); fmt.Sprint(got) != "[10 11]" {
		t.Errorf("Touched = %v", got)
	}
	if l.Size(ASCII, SHA384) == 0 || l.Size(ASCII, SHA512) != 0 {
		t.Error("SHA384 bank missing or SHA512 bank present")
	}
	if _, err := l.ReadAt(make([]byte, 1), 0, ASCII, SHA512); err == nil || err == io.EOF {
		t.Errorf("ReadAt of a missing bank: %v", err)
	}
}

// TestListConcurrent runs one writer and many readers (run it with -race):
// every reader re-reads the prefix it has seen and finds the same bytes,
// at random offsets, while the list grows.
func TestListConcurrent(t *testing.T) {
	const total = 3000
	l := NewList()
	entries := make([]*Entry, total)
	for i := range entries {
		entries[i] = testEntry(t, i)
	}
	var want [2][]byte
	for _, e := range entries {
		want[0] = e.AppendASCII(want[0], SHA256)
		want[1] = e.AppendBinary(want[1], SHA256)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for r := 0; r < 6; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			f := Format(r % 2)
			buf := make([]byte, 100+r*333)
			off := int64(0)
			for off < int64(len(want[f])) {
				n, err := l.ReadAt(buf, off, f, SHA256)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], want[f][off:off+int64(n)]) {
					errs <- fmt.Errorf("reader %d: bytes at %d differ", r, off)
					return
				}
				// Re-read an earlier offset: it must not have changed.
				back := off / 2
				m, _ := l.ReadAt(buf[:50], back, f, SHA256)
				if !bytes.Equal(buf[:m], want[f][back:back+int64(m)]) {
					errs <- fmt.Errorf("reader %d: bytes at %d changed", r, back)
					return
				}
				off += int64(n)
				if n == 0 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := l.Wait(ctx, l.Len())
					cancel()
					if err != nil && l.Len() < total {
						errs <- fmt.Errorf("reader %d: wait: %v", r, err)
						return
					}
				}
			}
		}(r)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := 0; r < 4; r++ {
			_ = l.PCR(SHA1, 10)
			_ = l.Size(ASCII, SHA1)
			_ = l.Entry(l.Len() - 1)
		}
	}()
	for i, e := range entries {
		if !l.Append(e) {
			t.Fatalf("entry %d dropped", i)
		}
		if i%64 == 0 {
			runtime.Gosched() // let readers catch up with the writer
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if l.Len() != total {
		t.Fatalf("Len = %d", l.Len())
	}
}

func TestListWait(t *testing.T) {
	l := NewList()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on an empty list = %v", err)
	}
	done := make(chan error)
	go func() { done <- l.Wait(context.Background(), 0) }()
	l.Append(testEntry(t, 0))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after Append")
	}
	if err := l.Wait(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
}
