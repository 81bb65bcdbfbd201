package policy

import (
	"reflect"
	"testing"
)

func mustParse(t testing.TB, text string) Policy {
	t.Helper()
	rules, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

func TestMatch(t *testing.T) {
	uuid1, _ := parseUUID("6a7b5d3c-8f0e-4d1a-9b2c-0123456789ab")
	tests := []struct {
		name   string
		policy string
		ev     Event
		want   Decision
	}{
		{
			name:   "empty policy",
			policy: "",
			ev:     Event{Func: BPRMCheck, Mask: MayExec},
			want:   Decision{PCR: -1},
		},
		{
			name:   "func and exact mask",
			policy: "measure func=BPRM_CHECK mask=MAY_EXEC",
			ev:     Event{Func: BPRMCheck, Mask: MayExec},
			want:   Decision{Actions: Measure, PCR: -1},
		},
		{
			name:   "exact mask differs",
			policy: "measure func=FILE_CHECK mask=MAY_READ",
			ev:     Event{Func: FileCheck, Mask: MayRead | MayWrite},
			want:   Decision{PCR: -1},
		},
		{
			name:   "^mask: access includes the bit",
			policy: "measure func=FILE_CHECK mask=^MAY_READ",
			ev:     Event{Func: FileCheck, Mask: MayRead | MayWrite},
			want:   Decision{Actions: Measure, PCR: -1},
		},
		{
			name:   "^mask: access lacks the bit",
			policy: "measure func=FILE_CHECK mask=^MAY_READ",
			ev:     Event{Func: FileCheck, Mask: MayWrite},
			want:   Decision{PCR: -1},
		},
		{
			name:   "dont_measure decides first",
			policy: "dont_measure fsmagic=0x9fa0\nmeasure func=FILE_CHECK",
			ev:     Event{Func: FileCheck, Mask: MayRead, FSMagic: 0x9fa0},
			want:   Decision{PCR: -1},
		},
		{
			name:   "dont_measure of another fs does not apply",
			policy: "dont_measure fsmagic=0x9fa0\nmeasure func=FILE_CHECK",
			ev:     Event{Func: FileCheck, Mask: MayRead, FSMagic: 0xef53},
			want:   Decision{Actions: Measure, PCR: -1},
		},
		{
			name:   "first measure rule wins pcr and template; later measure rules skipped",
			policy: "measure func=BPRM_CHECK pcr=11 template=ima-sig\nmeasure func=BPRM_CHECK pcr=12 template=ima-ng",
			ev:     Event{Func: BPRMCheck, Mask: MayExec},
			want:   Decision{Actions: Measure, PCR: 11, Template: "ima-sig"},
		},
		{
			name:   "kinds are decided separately",
			policy: "dont_appraise fsmagic=0x1021994\nmeasure func=BPRM_CHECK\nappraise func=BPRM_CHECK appraise_type=imasig\naudit",
			ev:     Event{Func: BPRMCheck, Mask: MayExec, FSMagic: 0x1021994},
			want:   Decision{Actions: Measure | Audit, PCR: -1},
		},
		{
			name:   "appraise with options",
			policy: "measure func=BPRM_CHECK\nappraise func=BPRM_CHECK appraise_type=imasig appraise_algos=sha256 permit_directio",
			ev:     Event{Func: BPRMCheck, Mask: MayExec},
			want:   Decision{Actions: Measure | Appraise, PCR: -1, AppraiseType: "imasig", AppraiseAlgos: []string{"sha256"}, PermitDirectIO: true},
		},
		{
			name:   "sigv3 and verity",
			policy: "appraise func=BPRM_CHECK digest_type=verity appraise_type=sigv3",
			ev:     Event{Func: BPRMCheck, Mask: MayExec},
			want:   Decision{Actions: Appraise, PCR: -1, AppraiseType: "sigv3", DigestVerity: true},
		},
		{
			name:   "appraise clears a decided hash",
			policy: "hash func=FILE_CHECK\nappraise func=FILE_CHECK",
			ev:     Event{Func: FileCheck, Mask: MayRead},
			want:   Decision{Actions: Appraise, PCR: -1},
		},
		{
			name:   "dont_hash then appraise",
			policy: "dont_hash\nappraise\nhash",
			ev:     Event{Func: FileCheck, Mask: MayRead},
			want:   Decision{Actions: Appraise, PCR: -1},
		},
		{
			name:   "uid and euid",
			policy: "measure func=FILE_CHECK uid=1000\nmeasure func=FILE_CHECK euid=0",
			ev:     Event{Func: FileCheck, Mask: MayRead, UID: 1000, EUID: 1000},
			want:   Decision{Actions: Measure, PCR: -1},
		},
		{
			name:   "euid without CAP_SETUID: only euid counts",
			policy: "measure euid=0",
			ev:     Event{Func: FileCheck, Mask: MayRead, UID: 0, EUID: 1000, SUID: 0},
			want:   Decision{PCR: -1},
		},
		{
			name:   "euid with CAP_SETUID: suid or uid count",
			policy: "measure euid=0",
			ev:     Event{Func: FileCheck, Mask: MayRead, UID: 1000, EUID: 1000, SUID: 0, CapSetUID: true},
			want:   Decision{Actions: Measure, PCR: -1},
		},
		{
			name:   "egid with CAP_SETGID",
			policy: "measure egid<100",
			ev:     Event{Func: FileCheck, EGID: 500, SGID: 500, GID: 50, CapSetGID: true},
			want:   Decision{Actions: Measure, PCR: -1},
		},
		{
			name:   "uid greater: strict",
			policy: "measure uid>1000",
			ev:     Event{Func: FileCheck, UID: 1000},
			want:   Decision{PCR: -1},
		},
		{
			name:   "uid less",
			policy: "measure uid<1000",
			ev:     Event{Func: FileCheck, UID: 999},
			want:   Decision{Actions: Measure, PCR: -1},
		},
		{
			name:   "gid",
			policy: "measure gid=5",
			ev:     Event{Func: FileCheck, GID: 6},
			want:   Decision{PCR: -1},
		},
		{
			name:   "fowner and fgroup",
			policy: "appraise fowner>999 fgroup<100",
			ev:     Event{Func: BPRMCheck, FOwner: 1000, FGroup: 99},
			want:   Decision{Actions: Appraise, PCR: -1},
		},
		{
			name:   "fowner fails",
			policy: "appraise fowner=0",
			ev:     Event{Func: BPRMCheck, FOwner: 1000},
			want:   Decision{PCR: -1},
		},
		{
			name:   "fsuuid and fsname",
			policy: "dont_measure fsuuid=6a7b5d3c-8f0e-4d1a-9b2c-0123456789ab\nmeasure fsname=ext4",
			ev:     Event{Func: FileCheck, FSUUID: uuid1, FSName: "ext4"},
			want:   Decision{PCR: -1},
		},
		{
			name:   "fsname",
			policy: "dont_measure fsuuid=6a7b5d3c-8f0e-4d1a-9b2c-0123456789ab\nmeasure fsname=ext4",
			ev:     Event{Func: FileCheck, FSName: "ext4"},
			want:   Decision{Actions: Measure, PCR: -1},
		},
		{
			name:   "generic rules do not match KEY_CHECK",
			policy: "measure\nmeasure func=KEY_CHECK keyrings=.ima pcr=13",
			ev:     Event{Func: KeyCheck, Keyring: ".builtin_trusted_keys"},
			want:   Decision{PCR: -1},
		},
		{
			name:   "KEY_CHECK keyring listed",
			policy: "measure\nmeasure func=KEY_CHECK keyrings=.ima|.evm pcr=13",
			ev:     Event{Func: KeyCheck, Keyring: ".evm"},
			want:   Decision{Actions: Measure, PCR: 13},
		},
		{
			name:   "KEY_CHECK without keyrings: any",
			policy: "measure func=KEY_CHECK uid=0",
			ev:     Event{Func: KeyCheck, Keyring: ".ima", FSMagic: 1},
			want:   Decision{Actions: Measure, PCR: -1},
		},
		{
			name:   "CRITICAL_DATA label",
			policy: "measure func=CRITICAL_DATA label=kernel_info",
			ev:     Event{Func: CriticalData, Label: "selinux"},
			want:   Decision{PCR: -1},
		},
		{
			name:   "CRITICAL_DATA uid checked",
			policy: "measure func=CRITICAL_DATA uid=0",
			ev:     Event{Func: CriticalData, Label: "kernel_info", UID: 5},
			want:   Decision{PCR: -1},
		},
		{
			name:   "POST_SETATTR ignores func and mask",
			policy: "appraise func=BPRM_CHECK mask=MAY_EXEC fowner=0",
			ev:     Event{Func: PostSetattr},
			want:   Decision{Actions: Appraise, PCR: -1},
		},
		{
			name:   "inactive LSM rule never matches",
			policy: "dont_measure obj_type=foo_t\nmeasure func=BPRM_CHECK",
			ev:     Event{Func: BPRMCheck, Mask: MayExec},
			want:   Decision{Actions: Measure, PCR: -1},
		},
		{
			name:   "all four kinds; a hash after appraise still applies; later dont_ rules ignored",
			policy: "measure\nappraise\naudit\nhash\ndont_measure\ndont_appraise\ndont_hash",
			ev:     Event{Func: MMAPCheck, Mask: MayExec},
			want:   Decision{Actions: Measure | Appraise | Audit | Hash, PCR: -1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mustParse(t, tc.policy).Match(tc.ev)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Match\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestMatchTCB checks the built-in tcb policy on typical events.
func TestMatchTCB(t *testing.T) {
	tcb, err := BuiltIn("tcb")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ev   Event
		want Action
	}{
		{"exec", Event{Func: BPRMCheck, Mask: MayExec, FSMagic: 0xef53, UID: 1000, EUID: 1000}, Measure},
		{"mmap exec", Event{Func: MMAPCheck, Mask: MayExec, FSMagic: 0xef53}, Measure},
		{"root reads", Event{Func: FileCheck, Mask: MayRead, FSMagic: 0xef53}, Measure},
		{"root opens rw", Event{Func: FileCheck, Mask: MayRead | MayWrite, FSMagic: 0xef53}, Measure},
		{"user reads", Event{Func: FileCheck, Mask: MayRead, FSMagic: 0xef53, UID: 1000, EUID: 1000}, 0},
		{"setuid-root program reads", Event{Func: FileCheck, Mask: MayRead, FSMagic: 0xef53, UID: 1000, EUID: 0}, Measure},
		{"root writes only", Event{Func: FileCheck, Mask: MayWrite, FSMagic: 0xef53}, 0},
		{"exec on tmpfs", Event{Func: BPRMCheck, Mask: MayExec, FSMagic: TmpfsMagic}, 0},
		{"proc read", Event{Func: FileCheck, Mask: MayRead, FSMagic: ProcSuperMagic}, 0},
		{"module", Event{Func: ModuleCheck, FSMagic: 0xef53}, Measure},
		{"policy", Event{Func: PolicyCheck, FSMagic: 0xef53}, Measure},
		{"creds", Event{Func: CredsCheck, Mask: MayExec, FSMagic: 0xef53, UID: 1000, EUID: 1000}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tcb.Match(tc.ev)
			if d.Actions != tc.want || d.PCR != -1 || d.Template != "" {
				t.Errorf("Match = %+v, want actions %v", d, tc.want)
			}
		})
	}
}
