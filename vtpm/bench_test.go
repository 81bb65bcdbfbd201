package vtpm

import (
	"os/exec"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/measurelog"
)

func benchSWTPM(b *testing.B, list EntrySource) *SWTPM {
	b.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		b.Skip("swtpm not installed")
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	v, err := StartSWTPM(SWTPMOptions{ID: "bench", StateDir: b.TempDir(), List: list, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	if err := v.Resync(nil); err != nil {
		b.Fatal(err)
	}
	return v
}

// BenchmarkExtend: one entry into both banks of a swtpm (one
// TPM2_PCR_Extend round trip over the unix socket).
func BenchmarkExtend(b *testing.B) {
	v := benchSWTPM(b, nil)
	e := testEntries(b, "bench", 2)[1]
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := v.Extend(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQuote: a bundle (two quotes, the list of 1000 entries).
func BenchmarkQuote(b *testing.B) {
	l := measurelog.NewList()
	v := benchSWTPM(b, l)
	for i, e := range testEntries(b, "bench", 1000) {
		if l.Append(e) {
			if err := v.Extend(e); err != nil {
				b.Fatalf("entry %d: %v", i, err)
			}
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Quote([]byte("bench")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify: offline verification of a 101-entry golden bundle.
func BenchmarkVerify(b *testing.B) {
	bd := readBundle(b, "testdata/bundle-a.json")
	nonce := []byte{0xc0, 0xff, 0xee}
	for i := 0; i < b.N; i++ {
		if err := Verify(bd, nonce); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResync: a fresh swtpm brought up to a 1000-entry journal.
func BenchmarkResync(b *testing.B) {
	entries := testEntries(b, "bench", 1000)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		v := benchSWTPM(b, nil)
		b.StartTimer()
		// benchSWTPM resynced nothing yet: PCRs are zero.
		v.synced = false
		if err := v.Resync(entries); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		v.Close()
		b.StartTimer()
	}
}
