// Package policy implements the kernel IMA policy language as Linux 6.12
// speaks it: parsing and validating rules like ima_parse_rule and
// ima_validate_rule, printing them back byte for byte like ima_policy_show,
// matching events with ima_match_policy's first-match semantics, and the
// kernel's built-in policies as values.
package policy
