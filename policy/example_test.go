package policy_test

import (
	"fmt"

	"github.com/imafs/imafs/policy"
)

func ExampleParse() {
	rules, err := policy.Parse(`# measure what runs, and what root reads
measure func=FILE_MMAP mask=MAY_EXEC
measure func=PATH_CHECK mask=^MAY_READ uid=0 template=d-ng|n-ng|sig pcr=11
dont_measure fsmagic=01021994
`)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Every rule ends in a space, like the kernel's read-back: quote them.
	for _, r := range rules {
		fmt.Printf("%q\n", r)
	}
	// Output:
	// "measure func=MMAP_CHECK mask=MAY_EXEC "
	// "measure func=FILE_CHECK mask=^MAY_READ pcr=11 uid=0 template=ima-sig "
	// "dont_measure fsmagic=0x1021994 "
}

func ExampleParse_error() {
	_, err := policy.Parse("measure func=BPRM_CHECK\nmeasure uid=0 euid=0\n")
	fmt.Println(err)
	// Output:
	// line 2: "euid=0": repeated uid/euid condition (uid and euid share one field)
}

func ExamplePolicy_Match() {
	p, _ := policy.BuiltIn("tcb")
	d := p.Match(policy.Event{Func: policy.BPRMCheck, Mask: policy.MayExec, FSMagic: 0xef53, UID: 1000, EUID: 1000})
	fmt.Println(d.Actions, d.PCR)
	d = p.Match(policy.Event{Func: policy.BPRMCheck, Mask: policy.MayExec, FSMagic: policy.TmpfsMagic})
	fmt.Println(d.Actions)
	// Output:
	// measure -1
	// none
}

func ExampleSession() {
	var s policy.Session
	n, err := s.Write([]byte("measure func=BPRM_CHECK"), 0) // no newline: count+1
	fmt.Println(n, err)
	n, err = s.Write([]byte("# a comment\nmeasure func=BOGUS\n"), 0) // one line per write
	fmt.Println(n, err)
	_, err = s.Write([]byte("measure func=BOGUS\n"), 0)
	fmt.Println(err)
	rules, err := s.Commit() // the session failed: nothing changes
	fmt.Println(len(rules), err)
	// Output:
	// 24 <nil>
	// 12 <nil>
	// policy write: invalid argument: line 3: "func=BOGUS": unknown func "BOGUS"
	// 0 policy update failed: policy write: invalid argument: line 3: "func=BOGUS": unknown func "BOGUS"
}
