package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func benchLines(b *testing.B) []string {
	var lines []string
	for _, e := range loadCorpus(b) {
		if e.Accepted {
			lines = append(lines, e.Input)
		}
	}
	tcb, err := os.ReadFile(filepath.Join(goldenDir, "policy-extra", "policy-tcb-readback"))
	if err != nil {
		b.Fatal(err)
	}
	return append(lines, strings.Split(strings.TrimSpace(string(tcb)), "\n")...)
}

// BenchmarkParseRule reports rules/s over the accepted corpus lines and
// the tcb read-back.
func BenchmarkParseRule(b *testing.B) {
	lines := benchLines(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ParseRule(lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rules/s")
}

// BenchmarkRuleString reports canonical printing speed.
func BenchmarkRuleString(b *testing.B) {
	var rules []*Rule
	for _, l := range benchLines(b) {
		r, err := ParseRule(l)
		if err != nil {
			b.Fatal(err)
		}
		rules = append(rules, r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var buf []byte
	for i := 0; i < b.N; i++ {
		buf = rules[i%len(rules)].AppendText(buf[:0])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rules/s")
}

// BenchmarkMatchTCB reports events/s through the built-in tcb policy with a
// mix of events: excluded file systems, measured execs, user reads.
func BenchmarkMatchTCB(b *testing.B) {
	tcb, err := BuiltIn("tcb")
	if err != nil {
		b.Fatal(err)
	}
	events := []Event{
		{Func: BPRMCheck, Mask: MayExec, FSMagic: 0xef53, UID: 1000, EUID: 1000},
		{Func: FileCheck, Mask: MayRead, FSMagic: 0xef53, UID: 1000, EUID: 1000},
		{Func: FileCheck, Mask: MayRead, FSMagic: 0xef53},
		{Func: MMAPCheck, Mask: MayExec, FSMagic: 0xef53},
		{Func: FileCheck, Mask: MayRead, FSMagic: ProcSuperMagic},
		{Func: FileCheck, Mask: MayWrite, FSMagic: TmpfsMagic},
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tcb.Match(events[i%len(events)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkSessionWrite reports a writer's lines/s through Session.
func BenchmarkSessionWrite(b *testing.B) {
	lines := benchLines(b)
	data := make([][]byte, len(lines))
	for i, l := range lines {
		data[i] = []byte(l + "\n")
	}
	b.ReportAllocs()
	b.ResetTimer()
	s := &Session{}
	for i := 0; i < b.N; i++ {
		if i%1000 == 0 {
			s = &Session{}
		}
		if _, err := s.Write(data[i%len(data)], 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
