package main

// The log and policy commands belong to cmd_log.go and cmd_policy.go; the
// words that talk to the daemon (imafs log ID|--host, imafs policy ID) are
// served here.
func init() {
	logClient = runLogClient
	policyClient = runPolicyClient
}
