package policy

import (
	"strings"
	"testing"
)

// Expected read-backs derived from ima_policy.c (6.12) and ima_policy_show;
// "tcb" is also checked against the real kernel in TestTCBReadback.
var builtinWant = map[string]string{
	"critical_data": "measure func=CRITICAL_DATA \n",
	"secure_boot": "appraise func=MODULE_CHECK appraise_type=imasig \n" +
		"appraise func=FIRMWARE_CHECK appraise_type=imasig \n" +
		"appraise func=KEXEC_KERNEL_CHECK appraise_type=imasig \n" +
		"appraise func=POLICY_CHECK appraise_type=imasig \n",
	"appraise_tcb": "dont_appraise fsmagic=0x9fa0 \n" +
		"dont_appraise fsmagic=0x62656572 \n" +
		"dont_appraise fsmagic=0x64626720 \n" +
		"dont_appraise fsmagic=0x1021994 \n" +
		"dont_appraise fsmagic=0x858458f6 \n" +
		"dont_appraise fsmagic=0x1cd1 \n" +
		"dont_appraise fsmagic=0x42494e4d \n" +
		"dont_appraise fsmagic=0x73636673 \n" +
		"dont_appraise fsmagic=0xf97cff8c \n" +
		"dont_appraise fsmagic=0x43415d53 \n" +
		"dont_appraise fsmagic=0x6e736673 \n" +
		"dont_appraise fsmagic=0xde5e81e4 \n" +
		"dont_appraise fsmagic=0x27e0eb \n" +
		"dont_appraise fsmagic=0x63677270 \n" +
		"appraise func=POLICY_CHECK appraise_type=imasig \n" +
		"appraise fowner=0 \n",
	"tcb": "dont_measure fsmagic=0x9fa0 \n" +
		"dont_measure fsmagic=0x62656572 \n" +
		"dont_measure fsmagic=0x64626720 \n" +
		"dont_measure fsmagic=0x1021994 \n" +
		"dont_measure fsmagic=0x1cd1 \n" +
		"dont_measure fsmagic=0x42494e4d \n" +
		"dont_measure fsmagic=0x73636673 \n" +
		"dont_measure fsmagic=0xf97cff8c \n" +
		"dont_measure fsmagic=0x43415d53 \n" +
		"dont_measure fsmagic=0x27e0eb \n" +
		"dont_measure fsmagic=0x63677270 \n" +
		"dont_measure fsmagic=0x6e736673 \n" +
		"dont_measure fsmagic=0xde5e81e4 \n" +
		"measure func=MMAP_CHECK mask=MAY_EXEC \n" +
		"measure func=BPRM_CHECK mask=MAY_EXEC \n" +
		"measure func=FILE_CHECK mask=^MAY_READ euid=0 \n" +
		"measure func=FILE_CHECK mask=^MAY_READ uid=0 \n" +
		"measure func=MODULE_CHECK \n" +
		"measure func=FIRMWARE_CHECK \n" +
		"measure func=POLICY_CHECK \n",
}

func TestBuiltIn(t *testing.T) {
	for name, want := range builtinWant {
		t.Run(name, func(t *testing.T) {
			p, err := BuiltIn(name)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.String(); got != want {
				t.Errorf("read-back\n got %q\nwant %q", got, want)
			}
			for _, r := range p {
				if err := r.Validate(); err != nil {
					t.Errorf("%q: %v", r, err)
				}
			}
			reparsed, err := Parse(want)
			if err != nil || Policy(reparsed).String() != want {
				t.Errorf("re-parse: %v", err)
			}
		})
	}
}

func TestBuiltInCombined(t *testing.T) {
	// The kernel's order whatever the order on the command line:
	// tcb, secure_boot, appraise_tcb, critical_data.
	p, err := BuiltIn("critical_data|appraise_tcb secure_boot|tcb|fail_securely")
	if err != nil {
		t.Fatal(err)
	}
	want := builtinWant["tcb"] + builtinWant["secure_boot"] + builtinWant["appraise_tcb"] + builtinWant["critical_data"]
	if got := p.String(); got != want {
		t.Errorf("combined\n got %q\nwant %q", got, want)
	}
	orig, err := BuiltIn("ima_tcb|tcb")
	if err != nil {
		t.Fatal(err)
	}
	if got := orig.String(); !strings.HasSuffix(got, "measure func=FILE_CHECK mask=MAY_READ uid=0 \nmeasure func=MODULE_CHECK \nmeasure func=FIRMWARE_CHECK \n") {
		t.Errorf("ima_tcb given first wins over tcb:\n%s", got)
	}
	if p, err := BuiltIn("fail_securely"); err != nil || len(p) != 0 || p == nil {
		t.Errorf("fail_securely = %v, %v", p, err)
	}
	for _, bad := range []string{"", "tcb|nosuch", "TCB"} {
		if _, err := BuiltIn(bad); err == nil {
			t.Errorf("BuiltIn(%q) succeeded", bad)
		}
	}
	// Fresh rules each call.
	a, _ := BuiltIn("tcb")
	a[0].FSMagic = 1
	if b, _ := BuiltIn("tcb"); b[0].FSMagic != ProcSuperMagic {
		t.Error("BuiltIn shares rules between calls")
	}
}

func TestRequiresSignedPolicy(t *testing.T) {
	for name, want := range map[string]bool{"tcb": false, "appraise_tcb": true, "secure_boot": true, "critical_data": false} {
		p, _ := BuiltIn(name)
		if got := p.RequiresSignedPolicy(); got != want {
			t.Errorf("%s: %v", name, got)
		}
	}
}
