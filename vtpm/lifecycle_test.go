package vtpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imafs/imafs/measurelog"
)

// TestSWTPMCrashRecovery: a swtpm that dies is noticed (Exited, errors on
// Extend); a new one on the same state directory, resynced from the list,
// agrees with the list again and keeps the attestation key.
func TestSWTPMCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	ns := &namespace{list: measurelog.NewList(), entries: testEntries(t, "ns-crash", 10)}
	v := startNSIn(t, "ns-crash", dir, ns.list)
	if err := v.Resync(nil); err != nil {
		t.Fatal(err)
	}
	record(t, ns.list, v, ns.entries[:6])
	ak1, err := v.AKPublic()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(v.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("Exited not closed after the swtpm was killed")
	}
	// The list goes on; the dead TPM cannot follow.
	if !ns.list.Append(ns.entries[6]) {
		t.Fatal("append refused")
	}
	if err := v.Extend(ns.entries[6]); err == nil {
		t.Fatal("Extend on a dead swtpm: no error")
	}
	if err := v.Close(); err != nil {
		t.Errorf("Close of a dead swtpm: %v", err)
	}

	v2 := startNSIn(t, "ns-crash", dir, ns.list)
	all := make([]*measurelog.Entry, ns.list.Len())
	for i := range all {
		all[i] = ns.list.Entry(i)
	}
	if err := v2.Resync(all); err != nil {
		t.Fatal(err)
	}
	record(t, ns.list, v2, ns.entries[7:])
	b, err := v2.Quote([]byte("recovered"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Entries != 10 {
		t.Errorf("bundle after recovery has %d entries, want 10", b.Entries)
	}
	if err := Verify(b, []byte("recovered")); err != nil {
		t.Errorf("Verify after recovery: %v", err)
	}
	if !bytes.Equal(b.AKPublic, ak1) {
		t.Error("attestation key changed after a crash")
	}
}

// TestConcurrentExtendQuote: quotes taken while entries stream in always
// cover exactly the extended prefix of the list, so every one verifies.
// Run with -race.
func TestConcurrentExtendQuote(t *testing.T) {
	l := measurelog.NewList()
	v := startNS(t, "ns-concurrent", l)
	if err := v.Resync(nil); err != nil {
		t.Fatal(err)
	}
	entries := testEntries(t, "ns-concurrent", 200)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() { // the pipeline: append then extend, one writer
		defer wg.Done()
		defer close(done)
		for i, e := range entries {
			if !l.Append(e) {
				t.Errorf("entry %d refused", i)
				return
			}
			if err := v.Extend(e); err != nil {
				t.Errorf("entry %d: %v", i, err)
				return
			}
		}
	}()
	for q := 0; q < 2; q++ {
		wg.Add(1)
		go func(q int) {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-done:
					return
				default:
				}
				nonce := []byte(fmt.Sprintf("q%d-%d", q, k))
				b, err := v.Quote(nonce)
				if err != nil {
					t.Errorf("quote: %v", err)
					return
				}
				if err := Verify(b, nonce); err != nil {
					t.Errorf("bundle with %d entries: %v", b.Entries, err)
					return
				}
			}
		}(q)
	}
	wg.Wait()
}

// TestFollow: a follower keeps the TPM equal to the replay of the list
// while a writer appends; after the writer stops and the follower caught
// up, the TPM holds exactly the whole list.
func TestFollow(t *testing.T) {
	l := measurelog.NewList()
	// Entries already in the list before the TPM starts (a journal replay).
	entries := testEntries(t, "ns-follow", 120)
	for _, e := range entries[:40] {
		l.Append(e)
	}
	v := startNS(t, "ns-follow", l)
	// The daemon's start: replay synchronously (errors surface at once),
	// then follow in the background.
	if n, err := v.CatchUp(); err != nil || n != 40 {
		t.Fatalf("CatchUp = %d, %v; want 40 entries", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- v.Follow(ctx, l) }()
	for i, e := range entries[40:] {
		if !l.Append(e) {
			t.Fatalf("entry %d refused", 40+i)
		}
		if i%20 == 0 {
			b, err := v.Quote([]byte{byte(i)})
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(b, []byte{byte(i)}); err != nil {
				t.Fatalf("quote while following (%d entries): %v", b.Entries, err)
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for v.Extended() < len(entries) {
		if time.Now().After(deadline) {
			t.Fatalf("follower extended %d of %d entries", v.Extended(), len(entries))
		}
		time.Sleep(5 * time.Millisecond)
	}
	replay := measurelog.Replay(entries, Banks...)
	for _, bank := range Banks {
		got, err := v.TPM().ReadPCR(bank, 10)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, replay.Value(bank, 10)) {
			t.Errorf("%s PCR 10 after Follow: %x, replay %x", bank, got, replay.Value(bank, 10))
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Follow returned %v, want context.Canceled", err)
	}
	if err := v.Follow(context.Background(), measurelog.NewList()); err == nil {
		t.Error("Follow of another list: no error")
	}
}

// TestQuoteEmptyList: a namespace with no entries yet quotes PCR 10 (zero)
// and the bundle verifies.
func TestQuoteEmptyList(t *testing.T) {
	l := measurelog.NewList()
	v := startNS(t, "ns-empty", l)
	if n, err := v.CatchUp(); err != nil || n != 0 {
		t.Fatalf("CatchUp = %d, %v", n, err)
	}
	b, err := v.Quote([]byte("empty"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Entries != 0 || len(b.PCRs["sha256"]) != 1 {
		t.Errorf("bundle: %d entries, sha256 PCRs %s; want 0 entries and PCR 10", b.Entries, b.PCRs["sha256"])
	}
	if err := Verify(b, []byte("empty")); err != nil {
		t.Errorf("Verify: %v", err)
	}
}
