// Package policy implements the kernel IMA policy language as Linux 6.12
// speaks it, byte for byte, and is the only place that interprets it.
//
//	p, err := policy.Parse(text)        // ima_parse_rule + ima_validate_rule; *ParseError
//	d := p.Match(policy.Event{Func: policy.BPRMCheck, Mask: policy.MayExec, ...})
//	s := p.String()                     // exactly as the kernel's policy file reads back
//	fn, ok := policy.ParseFunc("FILE_CHECK"); m, ok := policy.ParseMask("MAY_READ")
//	p.DependsOnCaller(fn); p.Uses(fn, policy.Measure); p.Appraises()
//
// Invariants:
//   - Parse accepts and rejects what the kernel does (golden kernel of
//     testdata/kernel-6.12), with the kernel's quirks; a bad rule changes
//     nothing and names the line, the token and the reason.
//   - String prints what the kernel prints; inactive rules (LSM conditions
//     without CONFIG_IMA_LSM_RULES) never match and are never shown.
//   - Match has ima_match_policy's first-match semantics per action kind.
//   - Questions about a policy (which hooks it uses, whether a decision
//     depends on the caller) are answered here from the rules, never by
//     parsing String() output elsewhere.
//   - Session models one open..close of the policy file (line per write,
//     all-or-nothing commit).
//
// Ids are the values the container's user namespace sees. The templates
// ima-ns (imafs's) and ima-nsreg (the kernel series') are accepted besides
// the kernel's. Kernel configuration and LSM
// conditions: docs/packages/policy.md.
package policy
