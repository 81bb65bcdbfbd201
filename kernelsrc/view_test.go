package kernelsrc

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
)

// customEntry builds a kernel entry of a custom template format (as
// ima_template_fmt= makes them), with ns tagged label.
func customEntry(t *testing.T, format, name, label string, sig []byte) *measurelog.Entry {
	t.Helper()
	e, err := measurelog.NewEntry(format, 10, measurelog.Measurement{
		FileDigest: measurelog.SHA256.Sum([]byte(name)), FileAlgo: measurelog.SHA256,
		DigestSHA1: measurelog.SHA1.Sum([]byte(name)), Name: name, Namespace: label, Sig: sig, UID: 1000, Mode: 0o100755,
	})
	if err != nil {
		t.Fatalf("NewEntry(%s): %v", format, err)
	}
	return e
}

// imaSig is a security.ima signature value (type 0x03, v2, sha256).
var imaSig = append([]byte{0x03, 0x02, 0x04, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x04}, bytes.Repeat([]byte{0x5a}, 4)...)

func TestContainerView(t *testing.T) {
	viol, err := measurelog.NewFileViolation(measurelog.TemplateIMANS, 10, measurelog.Measurement{Name: "/w", FileAlgo: measurelog.SHA256, Namespace: "c1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ng := customEntry(t, measurelog.TemplateIMANG, "/bin/ng", "", nil)
	for _, tc := range []struct {
		name     string
		e        *measurelog.Entry
		ok       bool
		template string
	}{
		{"ima-nsreg becomes ima-ng", kernelEntry(t, "/bin/sh", "c1:1"), true, measurelog.TemplateIMANG},
		{"host ima-nsreg (empty ns) too", kernelEntry(t, "/bin/sh", ""), true, measurelog.TemplateIMANG},
		{"a v1 kernel's ima-ns too", customEntry(t, measurelog.TemplateIMANS, "/bin/v1", "c1", nil), true, measurelog.TemplateIMANG},
		{"d-ng|n-ng|sig|ns becomes ima-sig", customEntry(t, "d-ng|n-ng|sig|ns", "/bin/signed", "c1:1", imaSig), true, measurelog.TemplateIMASig},
		{"d-ng|n-ng|ns|buf becomes ima-buf", customEntry(t, "d-ng|n-ng|ns|buf", "/b", "c1:1", nil), true, measurelog.TemplateIMABuf},
		{"no builtin: custom format", customEntry(t, "d-ng|n-ng|ns|iuid", "/bin/id", "c1:1", nil), true, "d-ng|n-ng|iuid"},
		{"violation stays a violation", viol, true, measurelog.TemplateIMANG},
		{"no ns field: unchanged", ng, false, ""},
		{"rest is the legacy ima template: unchanged", customEntry(t, "d|n|ns", "/bin/old", "c1:1", nil), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := ContainerView(tc.e)
			if ok != tc.ok {
				t.Fatalf("ContainerView ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if v.Template != tc.template || v.PCR != tc.e.PCR || v.Violation != tc.e.Violation {
				t.Errorf("view: %s pcr %d violation %v, want %s pcr %d violation %v", v.Template, v.PCR, v.Violation, tc.template, tc.e.PCR, tc.e.Violation)
			}
			if v.Name() != tc.e.Name() {
				t.Errorf("view name %q, want %q", v.Name(), tc.e.Name())
			}
			va, vd, _ := v.FileDigest()
			ea, ed, _ := tc.e.FileDigest()
			if va != ea || !bytes.Equal(vd, ed) {
				t.Errorf("view digest %s:%x, want %s:%x", va, vd, ea, ed)
			}
			if Label(v) != "" {
				t.Errorf("view still labelled %q", Label(v))
			}
			// The view is an entry a list can hold: it encodes and decodes.
			back, err := measurelog.DecodeBinary(v.AppendBinary(nil, measurelog.SHA1), measurelog.SHA1)
			if err != nil || len(back) != 1 || !equalEntry(back[0], v) {
				t.Errorf("view does not round-trip through the binary list: %v", err)
			}
		})
	}
}

// demux runs a Source over the kernel list stream and returns the host's
// and c1's lists, decoded from their binary renderings.
func demux(t *testing.T, containerTemplate string, stream []*measurelog.Entry, extra func(reg *fakeRegistry)) (host, c1 []*measurelog.Entry) {
	t.Helper()
	reg := newFakeRegistry("c1", "c2")
	boot, _ := measurelog.NewBootAggregate(measurelog.TemplateIMANG, stream[0].Fields[0][len("sha256:\x00"):], measurelog.SHA256)
	reg.host.List.Append(boot)
	reg.containers["c1"].List.Append(boot)
	s := New(reg, Options{ContainerTemplate: containerTemplate, Log: quietLog()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.tail(ctx, bytes.NewReader(binaryList(stream...))); err != nil {
		t.Fatalf("tail: %v", err)
	}
	if extra != nil {
		extra(reg)
	}
	decode := func(l *measurelog.List) []*measurelog.Entry {
		buf := make([]byte, l.Size(measurelog.Binary, measurelog.SHA1))
		n, _ := l.ReadAt(buf, 0, measurelog.Binary, measurelog.SHA1)
		es, err := measurelog.DecodeBinary(buf[:n], measurelog.SHA1)
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	return decode(reg.host.List), decode(reg.containers["c1"].List)
}

// kernelStream is a kernel list with two registrations of c1 (a daemon
// restart registers it again: the kernel measures /bin/sh once more), one
// of c2, host entries, a signed entry and a violation.
func kernelStream(t *testing.T) []*measurelog.Entry {
	t.Helper()
	boot, err := measurelog.NewBootAggregate(measurelog.TemplateIMANS, measurelog.SHA256.Sum([]byte("pcrs")), measurelog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	viol, err := measurelog.NewFileViolation(measurelog.TemplateIMANS, 10, measurelog.Measurement{Name: "/etc/w", FileAlgo: measurelog.SHA256, Namespace: "c1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return []*measurelog.Entry{
		boot,
		registerRecord(t, "c1:1 pid:[4026532001]"),
		registerRecord(t, "c2:2 pid:[4026532002]"),
		kernelEntry(t, "/bin/sh", ""),
		kernelEntry(t, "/bin/sh", "c1:1"),
		kernelEntry(t, "/bin/sh", "c2:2"),
		customEntry(t, "d-ng|n-ng|sig|ns", "/usr/bin/signed", "c1:1", imaSig),
		viol,
		kernelEntry(t, "/usr/bin/only-c2", "c2:2"),
		registerRecord(t, "c1:3 pid:[4026532001]"),
		kernelEntry(t, "/bin/sh", "c1:3"), // dropped from c1's list as a duplicate
		kernelEntry(t, "/usr/bin/late", "c1:3"),
	}
}

func TestVerifyBinding(t *testing.T) {
	stream := kernelStream(t)
	host, c1 := demux(t, ContainerNG, stream, nil)
	if got := len(c1); got != 5 { // boot, /bin/sh, signed, violation, late
		t.Fatalf("c1 has %d entries, want 5", got)
	}
	hostNS, c1NS := demux(t, ContainerNS, stream, nil)
	own := customEntry(t, measurelog.TemplateIMANG, "/usr/bin/by-fanotify", "", nil)
	hostOwn, c1Own := demux(t, ContainerNG, stream, func(reg *fakeRegistry) {
		if err := reg.RecordAll([]imans.Item{{NS: reg.containers["c1"], Entry: own}}); err != nil {
			t.Fatal(err)
		}
	})
	// imafs records in c1 an entry the host list already has: the host
	// list drops it, c1's keeps it.
	hostDup, c1Dup := demux(t, ContainerNG, stream, func(reg *fakeRegistry) {
		if err := reg.RecordAll([]imans.Item{{NS: reg.containers["c1"], Entry: stream[3]}, {NS: reg.containers["c1"], Entry: own}}); err != nil {
			t.Fatal(err)
		}
	})
	if len(c1Dup) != len(c1)+2 || len(hostDup) != len(host)+1 {
		t.Fatalf("host list %d -> %d entries, c1's %d -> %d: want +1 and +2", len(host), len(hostDup), len(c1), len(c1Dup))
	}
	swap := slices.Clone(c1)
	swap[1], swap[2] = swap[2], swap[1]
	altered := slices.Clone(c1)
	altered[2] = customEntry(t, measurelog.TemplateIMASig, "/usr/bin/signed", "", nil) // signature stripped
	otherBoot, _ := measurelog.NewBootAggregate(measurelog.TemplateIMANG, make([]byte, 32), measurelog.SHA256)
	for _, tc := range []struct {
		name      string
		host, ctr []*measurelog.Entry
		pidNS     string
		ok        bool
	}{
		{"honest ima-ng view", host, c1, "", true},
		{"honest, pid namespace checked", host, c1, "pid:[4026532001]", true},
		{"honest ima-ns (old behaviour)", hostNS, c1NS, "", true},
		{"imafs's own entry in both lists", hostOwn, c1Own, "", true},
		{"own entry missing from the host list", host, c1Own, "", false},
		{"own entry the host list dropped as a duplicate", hostDup, c1Dup, "", true},
		{"own entry the host list lacks, after a dropped one", host, c1Dup, "", false},
		{"dropped entry", host, slices.Delete(slices.Clone(c1), 2, 3), "", false},
		{"dropped last entry", host, c1[:len(c1)-1], "", false},
		{"altered entry", host, altered, "", false},
		{"reordered entries", host, swap, "", false},
		{"extra entry", host, append(slices.Clone(c1), own), "", false},
		{"c2's entry in c1's list", host, slices.Insert(slices.Clone(c1), 2, mustView(t, stream[8])), "", false},
		{"other boot_aggregate", host, append([]*measurelog.Entry{otherBoot}, c1[1:]...), "", false},
		{"registration of another pid namespace", host, c1, "pid:[1]", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyBinding(tc.host, tc.ctr, "c1", tc.pidNS)
			if tc.ok && err != nil {
				t.Errorf("VerifyBinding: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrBinding) {
				t.Errorf("VerifyBinding = %v, want ErrBinding", err)
			}
		})
	}
}

func mustView(t *testing.T, e *measurelog.Entry) *measurelog.Entry {
	t.Helper()
	v, ok := ContainerView(e)
	if !ok {
		t.Fatalf("no view of %s %q", e.Template, e.Name())
	}
	return v
}

func TestParseContainerTemplate(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{{"", ContainerNG, true}, {"ima-ng", ContainerNG, true}, {"ima-nsreg", ContainerNS, true}, {"ima-ns", ContainerNS, true}, {"ima-sig", "", false}, {"keylime", "", false}} {
		got, err := ParseContainerTemplate(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseContainerTemplate(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
