package policy

import "testing"

func TestDependsOnCaller(t *testing.T) {
	for _, tc := range []struct {
		rules string
		fn    Func
		want  bool
	}{
		{"measure func=BPRM_CHECK", BPRMCheck, false},
		{"measure func=BPRM_CHECK uid=0", BPRMCheck, true},
		{"measure func=BPRM_CHECK euid>1000", BPRMCheck, true},
		{"measure func=FILE_CHECK uid=0\nmeasure func=BPRM_CHECK", BPRMCheck, false},
		{"appraise fowner=0", BPRMCheck, false},
		{"dont_measure euid=1000\nmeasure func=BPRM_CHECK", BPRMCheck, true},
		{"measure func=FILE_CHECK mask=MAY_READ", FileCheck, true},
		{"measure func=FILE_CHECK mask=^MAY_READ", FileCheck, true},
		{"measure func=BPRM_CHECK mask=MAY_EXEC", BPRMCheck, false},
		{"measure func=FILE_CHECK gid=5", FileCheck, true},
		{"measure func=FILE_CHECK subj_type=foo_t", FileCheck, true},
		{"measure func=FILE_CHECK obj_type=foo_t", FileCheck, false},
		{"measure func=FILE_CHECK fsuuid=6d0c6a2c-2e4c-4f0e-9f5a-0d3f1e2b4c5a", FileCheck, false},
	} {
		p := mustParse(t, tc.rules)
		if got := p.DependsOnCaller(tc.fn); got != tc.want {
			t.Errorf("DependsOnCaller(%q, %s) = %v, want %v", tc.rules, tc.fn, got, tc.want)
		}
	}
}

func TestUses(t *testing.T) {
	all := Measure | Appraise | Audit
	for _, tc := range []struct {
		rules     string
		fn        Func
		want      bool
		appraises bool
	}{
		{"measure func=BPRM_CHECK", FileCheck, false, false},
		{"measure func=BPRM_CHECK", BPRMCheck, true, false},
		{"dont_measure fsmagic=0x9fa0\nmeasure func=BPRM_CHECK", FileCheck, false, false},
		{"measure fsmagic=0x9fa0", FileCheck, true, false},
		{"appraise func=FILE_CHECK", FileCheck, true, true},
		{"audit func=PATH_CHECK", FileCheck, true, false},
		{"hash func=FILE_CHECK", FileCheck, false, false},
	} {
		p := mustParse(t, tc.rules)
		if got := p.Uses(tc.fn, all); got != tc.want {
			t.Errorf("Uses(%q, %s) = %v, want %v", tc.rules, tc.fn, got, tc.want)
		}
		if got := p.Appraises(); got != tc.appraises {
			t.Errorf("Appraises(%q) = %v, want %v", tc.rules, got, tc.appraises)
		}
	}
}

func TestParseMask(t *testing.T) {
	for _, tc := range []struct {
		name string
		want Mask
		ok   bool
	}{
		{"MAY_EXEC", MayExec, true}, {"MAY_WRITE", MayWrite, true}, {"MAY_READ", MayRead, true},
		{"MAY_APPEND", MayAppend, true}, {"^MAY_READ", 0, false}, {"may_read", 0, false}, {"", 0, false},
	} {
		if got, ok := ParseMask(tc.name); got != tc.want || ok != tc.ok {
			t.Errorf("ParseMask(%q) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
