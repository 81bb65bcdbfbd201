package mmapsrc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/mmapsrc"
)

// lsmRefused skips unless this kernel refuses the BPF LSM programs, and
// returns why (EPERM on a kernel without BPF trampolines, as this VM).
func lsmRefused(t *testing.T) error {
	t.Helper()
	harness.RequireRoot(t)
	s, err := mmapsrc.Open(mmapsrc.Options{Mechanism: mmapsrc.MechanismLSM})
	if err == nil {
		s.Close()
		t.Skip("this kernel runs the BPF LSM mechanism (its proof: kernel-patches/test/run-bpf)")
	}
	return err
}

// Where the kernel refuses the BPF LSM programs, "lsm" fails with the
// kernel's reason and "auto" falls back to the tracepoints, says so in the
// log, and still reports mappings; the tracepoint mechanism cannot deny.
func TestMechanismFallback(t *testing.T) {
	refused := lsmRefused(t)
	t.Logf("lsm mechanism refused: %v", refused)
	if !errors.Is(refused, unix.EPERM) && !errors.Is(refused, mmapsrc.ErrBPFLSMInactive) && !errors.Is(refused, unix.EINVAL) {
		t.Errorf("lsm refused with %v, want the kernel's errno (EPERM without trampolines) or ErrBPFLSMInactive", refused)
	}
	log, hook := test.NewNullLogger()
	s := open(t, mmapsrc.Options{Log: log})
	if got := s.Mechanism(); got != mmapsrc.MechanismTracepoint || got.CanDeny() {
		t.Fatalf("auto runs %q (can deny %v), want %q", got, got.CanDeny(), mmapsrc.MechanismTracepoint)
	}
	if fb := s.Fallback(); fb == nil || fb.Error() != refused.Error() {
		t.Errorf("Fallback() = %v, want the lsm mode's error %v", fb, refused)
	}
	var warned, running bool
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.InfoLevel && strings.Contains(e.Message, "falling back") && e.Data[logrus.ErrorKey] != nil {
			warned = strings.Contains(e.Data[logrus.ErrorKey].(error).Error(), refused.Error())
		}
		if strings.Contains(e.Message, "running") && e.Data["mechanism"] == mmapsrc.MechanismTracepoint {
			running = true
		}
	}
	if !warned || !running {
		t.Errorf("log lacks the fallback warning with the reason (%v) or the running mechanism (%v): %v", warned, running, hook.AllEntries())
	}
	if err := s.SetAppraise(1, true); !errors.Is(err, mmapsrc.ErrCannotDeny) {
		t.Errorf("SetAppraise(on) under tracepoints: %v, want ErrCannotDeny", err)
	}
	if err := s.SetAppraise(1, false); err != nil {
		t.Errorf("SetAppraise(off) under tracepoints: %v", err)
	}
	// The fallback works: a mapping is reported (the receiver hashes it).
	dir := tmpfs(t)
	lib := copyLib(t, dir, "libfb.so")
	m := startMapper(t)
	watch(t, s, m)
	m.Do(t, "mmapx "+lib)
	got := of(t, until(t, s, lib, m.MntNS), lib, m.MntNS)
	if len(got) != 1 || got[0].Sum != sum(t, lib) || got[0].Digest != nil || got[0].Denied {
		t.Errorf("tracepoint fallback events %+v, want one with the file (no kernel digest, not denied)", got)
	}
}

// Explicit mechanisms: tracepoint runs; lsm fails where refused.
func TestMechanismExplicit(t *testing.T) {
	lsmRefused(t)
	s := open(t, mmapsrc.Options{Mechanism: mmapsrc.MechanismTracepoint})
	if s.Mechanism() != mmapsrc.MechanismTracepoint || s.Fallback() != nil {
		t.Errorf("tracepoint: runs %q, fallback %v", s.Mechanism(), s.Fallback())
	}
	if _, err := mmapsrc.Open(mmapsrc.Options{Mechanism: "bogus"}); err == nil {
		t.Error("unknown mechanism accepted")
	}
}

func TestParseMechanism(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want mmapsrc.Mechanism
		ok   bool
	}{
		{"", mmapsrc.MechanismAuto, true},
		{"auto", mmapsrc.MechanismAuto, true},
		{"lsm", mmapsrc.MechanismLSM, true},
		{"bpf-lsm", mmapsrc.MechanismLSM, true},
		{"tracepoint", mmapsrc.MechanismTracepoint, true},
		{"fanotify", "", false},
	} {
		got, err := mmapsrc.ParseMechanism(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseMechanism(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// Allow checks the digest's size against its algorithm (EINVAL).
func TestAllowDigestSize(t *testing.T) {
	s := open(t, mmapsrc.Options{Mechanism: mmapsrc.MechanismTracepoint})
	for _, tc := range []struct {
		algo string
		n    int
		ok   bool
	}{
		{"sha256", 32, true}, {"sha1", 20, true}, {"sha512", 64, true},
		{"sha256", 20, false}, {"nosuch", 32, false}, {"sha1", 0, false},
	} {
		err := s.Allow(1, tc.algo, make([]byte, tc.n))
		if (err == nil) != tc.ok || (!tc.ok && !errors.Is(err, unix.EINVAL)) {
			t.Errorf("Allow(%s, %d bytes) = %v, want ok %v (else EINVAL)", tc.algo, tc.n, err, tc.ok)
		}
	}
}
