package policy

import (
	"fmt"
	"strings"
)

// File system magics of the kernel's built-in rules (include/uapi/linux/magic.h).
const (
	ProcSuperMagic   = 0x9fa0
	SysfsMagic       = 0x62656572
	DebugfsMagic     = 0x64626720
	TmpfsMagic       = 0x01021994
	RamfsMagic       = 0x858458f6
	DevptsSuperMagic = 0x1cd1
	BinfmtfsMagic    = 0x42494e4d
	SecurityfsMagic  = 0x73636673
	SelinuxMagic     = 0xf97cff8c
	SmackMagic       = 0x43415d53
	CgroupSuperMagic = 0x27e0eb
	Cgroup2Magic     = 0x63677270
	NsfsMagic        = 0x6e736673
	EfivarfsMagic    = 0xde5e81e4
)

func fsmagicRule(a Action, magic uint64) *Rule {
	return &Rule{Action: a, FSMagic: magic, HasFSMagic: true}
}

func dontMeasureRules() Policy {
	var p Policy
	for _, m := range []uint64{ProcSuperMagic, SysfsMagic, DebugfsMagic, TmpfsMagic, DevptsSuperMagic,
		BinfmtfsMagic, SecurityfsMagic, SelinuxMagic, SmackMagic, CgroupSuperMagic, Cgroup2Magic,
		NsfsMagic, EfivarfsMagic} {
		p = append(p, fsmagicRule(DontMeasure, m))
	}
	return p
}

// originalMeasurementRules is the kernel's original_measurement_rules (ima_tcb).
func originalMeasurementRules() Policy {
	return Policy{
		{Action: Measure, Func: MMAPCheck, Mask: MayExec},
		{Action: Measure, Func: BPRMCheck, Mask: MayExec},
		{Action: Measure, Func: FileCheck, Mask: MayRead, UID: IDCond{OpEqual, 0}},
		{Action: Measure, Func: ModuleCheck},
		{Action: Measure, Func: FirmwareCheck},
	}
}

// defaultMeasurementRules is the kernel's default_measurement_rules (tcb).
func defaultMeasurementRules() Policy {
	return Policy{
		{Action: Measure, Func: MMAPCheck, Mask: MayExec},
		{Action: Measure, Func: BPRMCheck, Mask: MayExec},
		{Action: Measure, Func: FileCheck, Mask: MayRead, MaskIncludes: true, EUID: IDCond{OpEqual, 0}},
		{Action: Measure, Func: FileCheck, Mask: MayRead, MaskIncludes: true, UID: IDCond{OpEqual, 0}},
		{Action: Measure, Func: ModuleCheck},
		{Action: Measure, Func: FirmwareCheck},
		{Action: Measure, Func: PolicyCheck},
	}
}

// defaultAppraiseRules is the kernel's default_appraise_rules (appraise_tcb)
// for the golden configuration: CONFIG_IMA_WRITE_POLICY=y,
// CONFIG_IMA_APPRAISE_SIGNED_INIT unset.
func defaultAppraiseRules() Policy {
	var p Policy
	for _, m := range []uint64{ProcSuperMagic, SysfsMagic, DebugfsMagic, TmpfsMagic, RamfsMagic,
		DevptsSuperMagic, BinfmtfsMagic, SecurityfsMagic, SelinuxMagic, SmackMagic, NsfsMagic,
		EfivarfsMagic, CgroupSuperMagic, Cgroup2Magic} {
		p = append(p, fsmagicRule(DontAppraise, m))
	}
	return append(p,
		&Rule{Action: Appraise, Func: PolicyCheck, DigSigRequired: true},
		&Rule{Action: Appraise, FOwner: IDCond{OpEqual, 0}},
	)
}

func secureBootRules() Policy {
	return Policy{
		{Action: Appraise, Func: ModuleCheck, DigSigRequired: true},
		{Action: Appraise, Func: FirmwareCheck, DigSigRequired: true},
		{Action: Appraise, Func: KexecKernelCheck, DigSigRequired: true},
		{Action: Appraise, Func: PolicyCheck, DigSigRequired: true},
	}
}

func criticalDataRules() Policy {
	return Policy{{Action: Measure, Func: CriticalData}}
}

// BuiltIn returns a built-in policy of Linux 6.12 (ima_policy.c) as the
// kernel builds it for the ima_policy= boot parameter: "tcb",
// "appraise_tcb", "secure_boot", "critical_data", or several joined with
// "|" or " " (e.g. "tcb|appraise_tcb"), assembled in the kernel's order:
// dont_measure rules, measurement rules, secure_boot, appraise_tcb,
// critical_data. "ima_tcb" (the ima_tcb boot parameter's original policy)
// is accepted too; "fail_securely" is a flag and adds no rules. Every call
// returns fresh rules the caller may modify.
//
// The golden kernel has no architecture-specific rules (no EFI secure boot)
// and no CONFIG_IMA_APPRAISE_REQUIRE_*_SIGS build rules, so none are added.
func BuiltIn(name string) (Policy, error) {
	var tcb, origTCB, appraiseTCB, secureBoot, criticalData bool
	any := false
	for _, n := range strings.FieldsFunc(name, func(r rune) bool { return r == '|' || r == ' ' || r == '\n' }) {
		any = true
		switch n {
		case "tcb":
			if !origTCB {
				tcb = true
			}
		case "ima_tcb":
			if !tcb {
				origTCB = true
			}
		case "appraise_tcb":
			appraiseTCB = true
		case "secure_boot":
			secureBoot = true
		case "critical_data":
			criticalData = true
		case "fail_securely":
		default:
			return nil, fmt.Errorf("policy: built-in policy %q not found", n)
		}
	}
	if !any {
		return nil, fmt.Errorf("policy: built-in policy %q not found", name)
	}
	var p Policy
	if tcb || origTCB {
		p = append(p, dontMeasureRules()...)
	}
	if tcb {
		p = append(p, defaultMeasurementRules()...)
	}
	if origTCB {
		p = append(p, originalMeasurementRules()...)
	}
	if secureBoot {
		p = append(p, secureBootRules()...)
	}
	if appraiseTCB {
		p = append(p, defaultAppraiseRules()...)
	}
	if criticalData {
		p = append(p, criticalDataRules()...)
	}
	if p == nil {
		p = Policy{}
	}
	return p, nil
}
