// Package policy implements the kernel IMA policy language as Linux 6.12
// speaks it, byte for byte:
//
//   - Parse and ParseRule read rules like ima_parse_rule and validate them
//     like ima_validate_rule: every action, condition and option, the
//     allowed func/option combinations, repeated keys (uid= and euid= share
//     one field, as do gid= and egid=), the kernel's number parsing
//     (kstrtoul: "+", "0x" for fsmagic) and its quirks (fsname= and pcr= may
//     repeat, the last one wins; a repeated fsmagic= is only detected when
//     the first is non-zero; fsuuid= reads the first 36 characters). A bad
//     rule gives a *ParseError naming the line, the token and the reason.
//   - Rule.String and Policy.String print rules exactly as the kernel's
//     policy file reads them back (ima_policy_show): the kernel's token
//     order, "0x%lx" magics, ids with "%d" (2^31 and above print negative),
//     fsname cut to 63 bytes, aliases folded (FILE_MMAP → MMAP_CHECK,
//     PATH_CHECK → FILE_CHECK), templates by name, each rule ending in " ".
//   - Policy.Match decides what applies to an Event with ima_match_policy's
//     first-match semantics per action kind.
//   - BuiltIn returns the kernel's built-in policies (tcb, appraise_tcb,
//     secure_boot, critical_data and combinations) as values.
//   - Session models one open..close of the kernel's policy file: one line
//     per write(), the kernel's byte counts and errors, loading a policy
//     file named by "/path", and the all-or-nothing commit at close.
//
// # Kernel configuration
//
// The reference is the golden kernel of testdata/kernel-6.12 (its
// kernel-config-6.12): CONFIG_IMA_MEASURE_ASYMMETRIC_KEYS=y (func=KEY_CHECK
// and keyrings= exist), no CONFIG_IMA_APPRAISE_MODSIG (imasig|modsig is
// rejected unless ParseOptions.ModSig), no CONFIG_IMA_LSM_RULES, 64 PCRs
// (pcr=0..63). ParseOptions.HashAlgos chooses the algorithms
// appraise_algos= accepts (the kernel: those its crypto API has).
//
// # LSM conditions
//
// Without CONFIG_IMA_LSM_RULES no LSM can resolve obj_user=, obj_role=,
// obj_type=, subj_user=, subj_role= or subj_type=. The kernel then rejects
// such a rule with EINVAL while its boot-time policy is in force, and
// accepts it once a custom policy was loaded, as a rule that never matches
// and that the read-back never shows (not even its other conditions). This
// package does the same: ParseOptions.DefaultPolicyActive selects the
// first behaviour; otherwise the rule is kept with Rule.Active() == false,
// Match skips it and Policy.String leaves it out. Rule.String still renders
// it (with the LSM conditions where an LSM-enabled kernel prints them), so
// tools can show it; "imafs policy fmt" prints a note for it instead.
//
// # Namespaces
//
// imafs applies a policy per container. Ids in rules and events are the
// values as the container's user namespace sees them; the kernel stores
// and prints the mapped (initial namespace) ids instead.
//
// The template "ima-ns" (d-ng|n-ng|ns), imafs's namespace-tagged template,
// is accepted by template= in addition to the kernel's built-in ones (the
// imafs kernel patch defines it too).
package policy
