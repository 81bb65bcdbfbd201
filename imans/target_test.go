package imans

import (
	"testing"

	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

func TestTarget(t *testing.T) {
	ns := newNamespace("c1", 0, nil, measurelog.SHA256, "ima-ng", nil, policy.Limits{})
	for _, tc := range []struct {
		d        policy.Decision
		template string
		pcr      uint32
	}{
		{policy.Decision{PCR: -1}, "ima-ng", DefaultPCR},
		{policy.Decision{PCR: 11}, "ima-ng", 11},
		{policy.Decision{PCR: 0}, "ima-ng", 0},
		{policy.Decision{PCR: -1, Template: "ima-sig"}, "ima-sig", DefaultPCR},
		// The daemon's own records of both namespace-tagged templates are
		// imafs's ima-ns: the container ID, not a kernel registration.
		{policy.Decision{PCR: -1, Template: "ima-ns"}, "ima-ns", DefaultPCR},
		{policy.Decision{PCR: -1, Template: "ima-nsreg"}, "ima-ns", DefaultPCR},
	} {
		if tmpl, pcr := ns.Target(tc.d); tmpl != tc.template || pcr != tc.pcr {
			t.Errorf("Target(%+v) = %s, %d; want %s, %d", tc.d, tmpl, pcr, tc.template, tc.pcr)
		}
	}
	if got := newNamespace("c2", 0, nil, measurelog.SHA256, "ima-nsreg", nil, policy.Limits{}).Template(); got != "ima-ns" {
		t.Errorf("default template ima-nsreg: the namespace records %s, want ima-ns", got)
	}
}
