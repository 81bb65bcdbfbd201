package policy

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// TestParseRule covers the kernel's parsing and validation rules
// (ima_parse_rule, ima_validate_rule, lib/kstrtox.c, lib/uuid.c) beyond the
// golden corpus. want is the read-back ("" for blank/comment lines); a
// non-empty errToken means the rule is invalid and names that token.
func TestParseRule(t *testing.T) {
	tests := []struct {
		in       string
		want     string
		errToken string // "-": error without a token (the rule as a whole)
	}{
		// blank and comment lines
		{in: "", want: ""},
		{in: " \t ", want: ""},
		{in: "# comment", want: ""},
		{in: " \t# indented comment", want: ""},
		{in: "measure # not a comment here", errToken: "#"},
		// separators: only space and tab
		{in: "measure\tfunc=BPRM_CHECK", want: "measure func=BPRM_CHECK "},
		{in: "measure func=BPRM_CHECK\r", errToken: "func=BPRM_CHECK\r"},
		{in: "measure\vfunc=BPRM_CHECK", errToken: "measure\vfunc=BPRM_CHECK"},
		// actions
		{in: "dont_hash", want: "dont_hash "},
		{in: "audit func=BPRM_CHECK", want: "audit func=BPRM_CHECK "},
		{in: "measure appraise", errToken: "appraise"},
		{in: "measure measure", errToken: "measure"},
		{in: "dont_audit", errToken: "dont_audit"},
		{in: "func=BPRM_CHECK", errToken: "-"},
		// func
		{in: "measure func=PATH_CHECK", want: "measure func=FILE_CHECK "},
		{in: "measure func=file_check", errToken: "func=file_check"},
		{in: "measure func=", errToken: "func="},
		{in: "measure func=POST_SETATTR", errToken: "func=POST_SETATTR"},
		{in: "measure func=MMAP_CHECK func=MMAP_CHECK", errToken: "func=MMAP_CHECK"},
		// mask
		{in: "measure mask=^MAY_APPEND", want: "measure mask=^MAY_APPEND "},
		{in: "measure mask=^", errToken: "mask=^"},
		{in: "measure mask=MAY_READ mask=MAY_READ", errToken: "mask=MAY_READ"},
		{in: "measure mask=^^MAY_READ", errToken: "mask=^^MAY_READ"},
		// fsmagic: kstrtoul base 16
		{in: "dont_measure fsmagic=0X9FA0", want: "dont_measure fsmagic=0x9fa0 "},
		{in: "dont_measure fsmagic=+9fa0", want: "dont_measure fsmagic=0x9fa0 "},
		{in: "dont_measure fsmagic=ffffffffffffffff", want: "dont_measure fsmagic=0xffffffffffffffff "},
		{in: "dont_measure fsmagic=10000000000000000", errToken: "fsmagic=10000000000000000"},
		{in: "dont_measure fsmagic=0x", errToken: "fsmagic=0x"},
		{in: "dont_measure fsmagic=-1", errToken: "fsmagic=-1"},
		{in: "dont_measure fsmagic=12g", errToken: "fsmagic=12g"},
		{in: "dont_measure fsmagic=1 fsmagic=2", errToken: "fsmagic=2"},
		// the kernel detects a repeated fsmagic by its value: 0 then x is allowed
		{in: "dont_measure fsmagic=0", want: "dont_measure fsmagic=0x0 "},
		{in: "dont_measure fsmagic=0 fsmagic=9fa0", want: "dont_measure fsmagic=0x9fa0 "},
		// fsname: no repeat check, printed through a 64-byte buffer
		{in: "dont_measure fsname=a fsname=tmpfs", want: "dont_measure fsname=tmpfs "},
		{in: "dont_measure fsname=" + strings.Repeat("x", 70), want: "dont_measure fsname=" + strings.Repeat("x", 63) + " "},
		// fsuuid: first 36 characters, lowercase on read-back
		{in: "dont_measure fsuuid=6A7B5D3C-8F0E-4D1A-9B2C-0123456789AB", want: "dont_measure fsuuid=6a7b5d3c-8f0e-4d1a-9b2c-0123456789ab "},
		{in: "dont_measure fsuuid=6a7b5d3c-8f0e-4d1a-9b2c-0123456789abXYZ", want: "dont_measure fsuuid=6a7b5d3c-8f0e-4d1a-9b2c-0123456789ab "},
		{in: "dont_measure fsuuid=6a7b5d3c-8f0e-4d1a-9b2c-0123456789a", errToken: "fsuuid=6a7b5d3c-8f0e-4d1a-9b2c-0123456789a"},
		{in: "dont_measure fsuuid=6a7b5d3c8f0e-4d1a-9b2c-0123456789abcd", errToken: "fsuuid=6a7b5d3c8f0e-4d1a-9b2c-0123456789abcd"},
		{in: "dont_measure fsuuid=00000000-0000-0000-0000-000000000001 fsuuid=00000000-0000-0000-0000-000000000002", errToken: "fsuuid=00000000-0000-0000-0000-000000000002"},
		{in: "dont_measure fsuuid=00000000-0000-0000-0000-000000000000 fsuuid=00000000-0000-0000-0000-000000000002", want: "dont_measure fsuuid=00000000-0000-0000-0000-000000000002 "},
		// ids: kstrtoul base 10, 32 bits, not INVALID_UID; printed with %d
		{in: "measure uid=+7", want: "measure uid=7 "},
		{in: "measure uid=0x10", errToken: "uid=0x10"},
		{in: "measure uid=-1", errToken: "uid=-1"},
		{in: "measure uid=4294967294", want: "measure uid=-2 "},
		{in: "measure euid>2147483648", want: "measure euid>-2147483648 "},
		{in: "measure uid=4294967296", errToken: "uid=4294967296"},
		{in: "measure uid=", errToken: "uid="},
		{in: "measure uid<=5", errToken: "uid<=5"},
		{in: "measure uid=0 euid=0", errToken: "euid=0"},
		{in: "measure euid<5 uid>1", errToken: "uid>1"},
		{in: "measure gid=0 egid=0", errToken: "egid=0"},
		{in: "measure egid>10 fowner<3 fgroup=4 gid<1", errToken: "gid<1"},
		{in: "measure fowner=1 fowner=1", errToken: "fowner=1"},
		{in: "measure fgroup>1 fgroup<9", errToken: "fgroup<9"},
		{in: "measure egid>10 fowner<3 fgroup=4", want: "measure egid>10 fowner<3 fgroup=4 "},
		{in: "measure fsuuid=<x", errToken: "fsuuid=<x"},
		{in: "measure func<BPRM_CHECK", errToken: "func<BPRM_CHECK"},
		// pcr: kstrtoint, 0..63, no repeat check
		{in: "measure pcr=0", want: "measure pcr=0 "},
		{in: "measure pcr=-0", want: "measure pcr=0 "},
		{in: "measure pcr=64", errToken: "pcr=64"},
		{in: "measure pcr=-1", errToken: "pcr=-1"},
		{in: "measure pcr=10 pcr=11", want: "measure pcr=11 "},
		{in: "dont_measure pcr=11", errToken: "pcr=11"},
		{in: "appraise pcr=11", errToken: "pcr=11"},
		// template: after measure, by name or format, once
		{in: "measure template=d-ng|n-ng", want: "measure template=ima-ng "},
		{in: "measure template=d|n", want: "measure template=ima "},
		{in: "measure template=evm-sig", want: "measure template=evm-sig "},
		{in: "measure template=ima-ns", want: "measure template=ima-ns "},
		{in: "measure template=ima-nsreg", want: "measure template=ima-nsreg "},
		{in: "measure template=d-ng|n-ng|ns", want: "measure template=ima-ns "},
		{in: "template=ima-ng measure", errToken: "template=ima-ng"},
		{in: "dont_measure template=ima-ng", errToken: "template=ima-ng"},
		{in: "measure template=ima-ng template=ima-ng", errToken: "template=ima-ng"},
		// appraise options
		{in: "appraise func=BPRM_CHECK appraise_type=imasig", want: "appraise func=BPRM_CHECK appraise_type=imasig "},
		{in: "appraise appraise_type=imasig appraise_type=imasig", want: "appraise appraise_type=imasig "},
		{in: "appraise func=BPRM_CHECK digest_type=verity appraise_type=sigv3", want: "appraise func=BPRM_CHECK appraise_type=sigv3 digest_type=verity "},
		{in: "appraise func=BPRM_CHECK appraise_type=sigv3 digest_type=verity", errToken: "appraise_type=sigv3"},
		{in: "appraise func=BPRM_CHECK appraise_type=imasig digest_type=verity", errToken: "digest_type=verity"},
		{in: "appraise func=BPRM_CHECK digest_type=verity appraise_type=imasig", errToken: "appraise_type=imasig"},
		{in: "appraise digest_type=sha256", errToken: "digest_type=sha256"},
		{in: "measure func=BPRM_CHECK digest_type=verity", want: "measure func=BPRM_CHECK digest_type=verity "},
		{in: "appraise func=MODULE_CHECK digest_type=verity appraise_type=sigv3", errToken: "digest_type=verity"},
		{in: "appraise appraise_flag=check_blacklist", want: "appraise "},
		{in: "appraise func=BPRM_CHECK appraise_algos=sha256,sha1,sha256", want: "appraise func=BPRM_CHECK appraise_algos=sha1,sha256 "},
		{in: "appraise func=BPRM_CHECK appraise_algos=sha512,sha3-256,md5", want: "appraise func=BPRM_CHECK appraise_algos=md5,sha512,sha3-256 "},
		{in: "appraise func=BPRM_CHECK appraise_algos=sha256,", errToken: "appraise_algos=sha256,"},
		{in: "appraise func=BPRM_CHECK appraise_algos=sm3", errToken: "appraise_algos=sm3"},
		{in: "appraise appraise_algos=sha1 appraise_algos=sha1", errToken: "appraise_algos=sha1"},
		{in: "measure appraise_algos=sha1", errToken: "appraise_algos=sha1"},
		{in: "appraise func=SETXATTR_CHECK", errToken: "func=SETXATTR_CHECK"},
		{in: "appraise func=SETXATTR_CHECK appraise_algos=sha256 fowner=0", errToken: "fowner=0"},
		{in: "measure permit_directio permit_directio", want: "measure permit_directio "},
		{in: "measure permit_directio=1", errToken: "permit_directio=1"},
		// func-specific conditions
		{in: "measure func=KEY_CHECK keyrings=.ima|.evm uid=0 pcr=11", want: "measure func=KEY_CHECK keyrings=.ima|.evm pcr=11 uid=0 "},
		{in: "measure func=KEY_CHECK keyrings=.ima||.evm", errToken: "keyrings=.ima||.evm"},
		{in: "measure func=KEY_CHECK keyrings=a keyrings=b", errToken: "keyrings=b"},
		{in: "measure func=KEY_CHECK euid=0", errToken: "euid=0"},
		{in: "measure func=KEY_CHECK fsmagic=9fa0", errToken: "fsmagic=9fa0"},
		{in: "appraise func=KEY_CHECK", errToken: "func=KEY_CHECK"},
		{in: "measure keyrings=.ima", errToken: "keyrings=.ima"},
		{in: "measure func=CRITICAL_DATA label=selinux|kernel_info gid=5", want: "measure func=CRITICAL_DATA label=selinux|kernel_info gid=5 "},
		{in: "measure func=CRITICAL_DATA keyrings=.ima", errToken: "keyrings=.ima"},
		{in: "measure func=CRITICAL_DATA label=a label=b", errToken: "label=b"},
		{in: "measure func=KEXEC_CMDLINE fsmagic=9fa0 uid=0", want: "measure func=KEXEC_CMDLINE fsmagic=0x9fa0 uid=0 "},
		{in: "measure func=KEXEC_CMDLINE mask=MAY_READ", errToken: "mask=MAY_READ"},
		{in: "hash func=KEXEC_CMDLINE", errToken: "func=KEXEC_CMDLINE"},
		{in: "appraise func=MODULE_CHECK appraise_type=imasig permit_directio", want: "appraise func=MODULE_CHECK appraise_type=imasig permit_directio "},
		{in: "dont_appraise func=BPRM_CHECK appraise_type=imasig", errToken: "appraise_type=imasig"},
		// LSM conditions (accepted as inactive once a custom policy is loaded)
		{in: "measure subj_type=a obj_user=b", want: "measure obj_user=b subj_type=a "},
		{in: "measure obj_role=a obj_role=b", want: "measure obj_role=b "},
		{in: "measure func=KEY_CHECK obj_type=x", errToken: "obj_type=x"},
		// unknown and malformed tokens
		{in: "MEASURE", errToken: "MEASURE"},
		{in: "measure foo=bar", errToken: "foo=bar"},
		{in: "measure =x", errToken: "=x"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseRule(tc.in)
			if tc.errToken != "" {
				var pe *ParseError
				if !errors.As(err, &pe) {
					t.Fatalf("got %v, %v; want a *ParseError", r, err)
				}
				wantTok := tc.errToken
				if wantTok == "-" {
					wantTok = ""
				}
				if pe.Token != wantTok || pe.Line != 1 || pe.Reason == "" {
					t.Errorf("error %+v; want token %q", pe, wantTok)
				}
				if wantTok != "" && !strings.Contains(pe.Error(), strconv.Quote(wantTok)) {
					t.Errorf("error %q does not name the token %q", pe.Error(), wantTok)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if r != nil {
				got = r.String()
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if r != nil {
				if err := r.Validate(); err != nil {
					t.Errorf("parsed rule does not validate: %v", err)
				}
			}
		})
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name string
		opts ParseOptions
		in   string
		ok   bool
	}{
		{"LSM while the default policy is active", ParseOptions{DefaultPolicyActive: true}, "measure obj_type=foo_t", false},
		{"LSM after a custom policy", ParseOptions{}, "measure obj_type=foo_t", true},
		{"modsig disabled", ParseOptions{}, "appraise func=MODULE_CHECK appraise_type=imasig|modsig", false},
		{"modsig enabled", ParseOptions{ModSig: true}, "appraise func=MODULE_CHECK appraise_type=imasig|modsig", true},
		{"modsig not for BPRM_CHECK", ParseOptions{ModSig: true}, "appraise func=BPRM_CHECK appraise_type=imasig|modsig", false},
		{"modsig with verity", ParseOptions{ModSig: true}, "appraise func=MODULE_CHECK digest_type=verity appraise_type=imasig|modsig", false},
		{"sha512 unavailable in the golden kernel", ParseOptions{HashAlgos: Kernel612HashAlgos}, "appraise appraise_algos=sha512", false},
		{"sha512 available by default", ParseOptions{}, "appraise appraise_algos=sha512", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRuleOptions(tc.in, tc.opts)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseRuleOptions(%q) = %v, %v; want ok=%v", tc.in, r, err, tc.ok)
			}
		})
	}
	r, err := ParseRuleOptions("appraise func=MODULE_CHECK appraise_type=imasig|modsig", ParseOptions{ModSig: true})
	if err != nil || r.String() != "appraise func=MODULE_CHECK appraise_type=imasig|modsig " {
		t.Errorf("modsig read-back %q, %v", r, err)
	}
}

func TestParse(t *testing.T) {
	rules, err := Parse("# header\nmeasure func=BPRM_CHECK\n\n  \t\nmeasure func=FILE_MMAP\n")
	if err != nil || len(rules) != 2 || Policy(rules).String() != "measure func=BPRM_CHECK \nmeasure func=MMAP_CHECK \n" {
		t.Fatalf("Parse = %v, %v", rules, err)
	}
	rules, err = Parse("measure\n# two\nmeasure func=BOGUS\nmeasure\n")
	var pe *ParseError
	if rules != nil || !errors.As(err, &pe) || pe.Line != 3 || pe.Token != "func=BOGUS" ||
		err.Error() != `line 3: "func=BOGUS": unknown func "BOGUS"` {
		t.Fatalf("Parse = %v, %v", rules, err)
	}
	if _, err := ParseRule("measure\nmeasure"); err == nil {
		t.Error("ParseRule accepted two lines")
	}
	if r, err := ParseRule("measure\n"); err != nil || r.String() != "measure " {
		t.Errorf("ParseRule with a newline = %v, %v", r, err)
	}
}

func TestValidateHandBuilt(t *testing.T) {
	tests := []struct {
		name string
		r    Rule
		ok   bool
	}{
		{"measure with pcr", Rule{Action: Measure, HasPCR: true, PCR: 11}, true},
		{"no action", Rule{Func: BPRMCheck}, false},
		{"two actions", Rule{Action: Measure | Appraise}, false},
		{"pcr out of range", Rule{Action: Measure, HasPCR: true, PCR: 64}, false},
		{"uid and euid", Rule{Action: Measure, UID: IDCond{OpEqual, 0}, EUID: IDCond{OpEqual, 0}}, false},
		{"invalid id", Rule{Action: Measure, FOwner: IDCond{OpEqual, 0xffffffff}}, false},
		{"unknown template", Rule{Action: Measure, Template: "nosuch"}, false},
		{"template on appraise", Rule{Action: Appraise, Template: "ima-ng"}, false},
		{"keyrings without KEY_CHECK", Rule{Action: Measure, Keyrings: []string{"a"}}, false},
		{"verity appraise without sigv3", Rule{Action: Appraise, VerityRequired: true}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.r.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
