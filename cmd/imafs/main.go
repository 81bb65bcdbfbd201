// Command imafs serves a per-container /sys/kernel/security/ima over FUSE
// and offers the tools around it: policy formatting, measurement-list
// decoding and replay, and the daemon's client commands.
//
// Every subcommand lives in a file of its own (cmd_*.go) and registers itself
// in init with register, so the dispatcher here never changes when one is added.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one imafs subcommand.
type command struct {
	// name is the first word after "imafs" (e.g. "serve"); a two-word
	// command such as "log decode" is registered under "log" and dispatches
	// its own second word.
	name string
	// summary is the one line shown by "imafs --help".
	summary string
	// run executes the command with the arguments after its name and
	// returns the process exit code.
	run func(args []string) int
	// hidden: an internal command that "imafs --help" does not list.
	hidden bool
}

var commands = map[string]command{}

// register adds a subcommand; it is called from init functions.
func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("imafs: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// runClientOrUsage runs the arguments of a two-word command (log, policy)
// that are not one of its offline subcommands: a help word prints usage to
// stdout (exit 0); anything else goes to client, the daemon's client for the
// command, or prints usage to stderr (exit 2) in a build without it.
func runClientOrUsage(args []string, client func([]string) int, usageText string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "--help", "help":
			fmt.Fprint(stdout, usageText)
			return 0
		}
	}
	if client == nil {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	return client(args)
}

func usage() string {
	var b strings.Builder
	b.WriteString("imafs: a per-container /sys/kernel/security/ima\n\nUsage: imafs COMMAND [ARGS]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-10s %s\n", n, commands[n].summary)
	}
	b.WriteString("\nRun 'imafs COMMAND --help' for a command's flags.\n")
	return b.String()
}

func main() {
	os.Exit(dispatch(os.Args[1:]))
}

func dispatch(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stdout, usage())
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "imafs: unknown command %q\n\n%s", args[0], usage())
		return 2
	}
	return c.run(args[1:])
}
