package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/imafs/imafs/policy"
)

// policyClient handles "imafs policy ID [--set FILE]" and any other first
// word than "fmt" (the daemon's client, cmd_client.go). Nil: usage, exit 2.
var policyClient = runPolicyClient

const policyUsage = `Usage:
  imafs policy fmt [FILE]        print FILE's rules (stdin when no FILE or "-") in the
                                 kernel's read-back form; on the first invalid rule print
                                 "line N: <reason>" to stderr and exit 1
  imafs policy ID|--host [...]   show or set a namespace's policy (needs the daemon)
`

func runPolicy(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "fmt" {
		return runPolicyFmt(args[1:], stdin, stdout, stderr)
	}
	return runClientOrUsage(args, policyClient, policyUsage, stdout, stderr)
}

func runPolicyFmt(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	name := "-"
	switch {
	case len(args) == 1 && (args[0] == "-h" || args[0] == "--help"):
		fmt.Fprint(stdout, policyUsage)
		return 0
	case len(args) == 1:
		name = args[0]
	case len(args) > 1:
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	in := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "imafs policy fmt: %v\n", err)
			return 1
		}
		defer f.Close()
		in = f
	}
	data, err := io.ReadAll(in)
	if err != nil {
		fmt.Fprintf(stderr, "imafs policy fmt: read %s: %v\n", name, err)
		return 1
	}
	out, notes, err := formatPolicy(string(data))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, n := range notes {
		fmt.Fprintln(stderr, n)
	}
	if _, err := io.WriteString(stdout, out); err != nil {
		fmt.Fprintf(stderr, "imafs policy fmt: %v\n", err)
		return 1
	}
	return 0
}

// formatPolicy parses text line by line like a policy file and returns the
// kernel's read-back of its rules, notes about rules the kernel keeps but
// never shows, or the first *policy.ParseError.
func formatPolicy(text string) (string, []string, error) {
	var b strings.Builder
	var notes []string
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		r, err := policy.ParseRule(line)
		if err != nil {
			var pe *policy.ParseError
			if errors.As(err, &pe) {
				pe.Line = i + 1
				return "", nil, pe
			}
			return "", nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if r == nil {
			continue
		}
		if !r.Active() {
			notes = append(notes, fmt.Sprintf("line %d: note: %q has LSM conditions: accepted, but without LSM rules support the kernel never matches it nor shows it", i+1, strings.TrimSpace(r.String())))
			continue
		}
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String(), notes, nil
}
