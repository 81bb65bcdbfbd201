package vtpm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/imafs/imafs/measurelog"
)

func TestExtendMatchesReplay(t *testing.T) {
	for _, n := range []int{1, 7, 64} {
		l := measurelog.NewList(measurelog.SHA1, measurelog.SHA256)
		v := startNS(t, "ns-extend", l)
		if err := v.Resync(nil); err != nil {
			t.Fatal(err)
		}
		entries := testEntries(t, "ns-extend", n)
		record(t, l, v, entries)
		replay := measurelog.Replay(entries, Banks...)
		for _, bank := range Banks {
			for _, pcr := range []int{10, 11} {
				got, err := v.TPM().ReadPCR(bank, pcr)
				if err != nil {
					t.Fatal(err)
				}
				want := replay.Value(bank, pcr)
				if !bytes.Equal(got, want) {
					t.Errorf("n=%d %s PCR %d: TPM %x, replay %x", n, bank, pcr, got, want)
				}
				if lp := l.PCR(bank, pcr); !bytes.Equal(got, lp) {
					t.Errorf("n=%d %s PCR %d: TPM %x, list %x", n, bank, pcr, got, lp)
				}
			}
		}
		if v.Extended() != n {
			t.Errorf("Extended() = %d, want %d", v.Extended(), n)
		}
	}
}

func TestNotSyncedRefuses(t *testing.T) {
	l := measurelog.NewList()
	v := startNS(t, "ns-unsynced", l)
	e := testEntries(t, "ns-unsynced", 1)[0]
	if err := v.Extend(e); !errors.Is(err, ErrNotSynced) {
		t.Errorf("Extend before Resync: %v, want ErrNotSynced", err)
	}
	if _, err := v.Quote([]byte("nonce")); !errors.Is(err, ErrNotSynced) {
		t.Errorf("Quote before Resync: %v, want ErrNotSynced", err)
	}
}

// TestRestartResync: a daemon restart starts a fresh swtpm on the same
// state directory; its PCRs are reset, Resync from the journal restores
// them, and the attestation key is the same.
func TestRestartResync(t *testing.T) {
	dir := t.TempDir()
	l := measurelog.NewList()
	entries := testEntries(t, "ns-restart", 20)

	v1 := startNSIn(t, "ns-restart", dir, l)
	if err := v1.Resync(nil); err != nil {
		t.Fatal(err)
	}
	record(t, l, v1, entries)
	ak1, err := v1.AKPublic()
	if err != nil {
		t.Fatal(err)
	}
	pid1 := v1.Pid()
	if err := v1.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, pid1)

	v2 := startNSIn(t, "ns-restart", dir, l)
	zero, err := v2.TPM().ReadPCR(measurelog.SHA256, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(zero, make([]byte, 32)) {
		t.Fatalf("PCR 10 after restart = %x, want zeros (startup-clear)", zero)
	}
	// A journal replay that was cut short earlier: resync a prefix first,
	// then the whole list; the second Resync extends only the rest.
	if err := v2.Resync(entries[:8]); err != nil {
		t.Fatal(err)
	}
	if err := v2.Resync(entries); err != nil {
		t.Fatal(err)
	}
	replay := measurelog.Replay(entries, Banks...)
	for _, bank := range Banks {
		for _, pcr := range []int{10, 11} {
			got, err := v2.TPM().ReadPCR(bank, pcr)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, replay.Value(bank, pcr)) {
				t.Errorf("after restart+Resync %s PCR %d: TPM %x, replay %x", bank, pcr, got, replay.Value(bank, pcr))
			}
		}
	}
	ak2, err := v2.AKPublic()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ak1, ak2) {
		t.Error("attestation key changed across a restart on the same state directory")
	}
	// The quote after restart verifies against the list.
	b, err := v2.Quote([]byte("after-restart"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(b, []byte("after-restart")); err != nil {
		t.Errorf("Verify after restart: %v", err)
	}
	// A list that is not an extension of what the TPM holds is refused.
	other := testEntries(t, "someone-else", 5)
	if err := v2.Resync(other); err == nil {
		t.Error("Resync with a list the TPM does not hold a prefix of: no error")
	}
}

func TestStartErrors(t *testing.T) {
	needSWTPM(t)
	long := t.TempDir() + "/" + string(bytes.Repeat([]byte("x"), 120))
	if _, err := StartSWTPM(SWTPMOptions{ID: "long", StateDir: long}); err == nil {
		t.Error("StartSWTPM with a socket path too long for a unix socket: no error")
	}
	if _, err := StartSWTPM(SWTPMOptions{ID: "comma", StateDir: t.TempDir() + "/a,b"}); err == nil {
		t.Error("StartSWTPM with a comma in the state dir: no error")
	}
	if _, err := StartSWTPM(SWTPMOptions{ID: "none"}); err == nil {
		t.Error("StartSWTPM without a state dir: no error")
	}
	if _, err := StartSWTPM(SWTPMOptions{ID: "nobin", StateDir: t.TempDir(), Binary: "/nonexistent/swtpm"}); err == nil {
		t.Error("StartSWTPM with a missing binary: no error")
	}
	// Two swtpm on one state directory: swtpm's lock refuses the second.
	dir := t.TempDir()
	startNSIn(t, "first", dir, nil)
	if v, err := StartSWTPM(SWTPMOptions{ID: "second", StateDir: dir, SocketDir: t.TempDir()}); err == nil {
		v.Close()
		t.Error("second swtpm on the same state directory started")
	}
}
