// Command imafs serves a per-container /sys/kernel/security/ima over FUSE
// and offers the tools around it: policy formatting, measurement-list
// decoding and replay, and the daemon's client commands.
//
// Every subcommand lives in a file of its own (cmd_*.go) and is listed in
// commandList; `imafs serve` only parses flags into a daemon.Config and
// runs package internal/daemon.
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

// commandList is every subcommand.
func commandList() []command {
	return []command{
		{name: "serve", summary: "run the imafs daemon", run: runServe},
		{name: "attach", summary: "register a running container and mount its ima directory", run: runAttach},
		{name: "detach", summary: "unregister a container and unmount its ima directory", run: runDetach},
		{name: "oci-hook", summary: "OCI runtime hook: attach at createRuntime/prestart, detach at poststop", run: runOCIHook},
		{name: "ps", summary: "list the host and the attached containers", run: runPs},
		{name: "measure", summary: "measure a file into a container's list as its policy says", run: runMeasure},
		{name: "log", summary: "decode or replay a binary measurement list, or show a container's list",
			run: func(args []string) int { return runLog(args, os.Stdout, os.Stderr) }},
		{name: "policy", summary: "format IMA policy rules (fmt) or show/set a container's policy",
			run: func(args []string) int { return runPolicy(args, os.Stdin, os.Stdout, os.Stderr) }},
		{name: "quote", summary: "get a container's vTPM attestation bundle from the daemon", run: runQuote},
		{name: "verify", summary: "verify an attestation bundle offline", run: runVerify},
		{name: "upgrade", summary: "hand the daemon over to a new process running the binary now installed (no gap for readers)", run: runUpgrade},
		{name: "nri-plugin", summary: "containerd NRI plugin: adds imafs's OCI hooks to every container (not pod sandboxes), detaches at stop", run: runNRIPlugin},
		{name: "runtime", summary: "OCI runtime wrapping runc: adds imafs's hooks at create (Docker: a daemon.json runtime)", run: runRuntime},
		{name: "fanotify-keeper", summary: "internal: holds the fanotify groups across a daemon crash or upgrade (started by imafs serve --fanotify)",
			hidden: true, run: runKeeper},
	}
}

// lookup finds the subcommand named name.
func lookup(name string) (command, bool) {
	for _, c := range commandList() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
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
	cs := commandList()
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		if !c.hidden {
			fmt.Fprintf(&b, "  %-10s %s\n", c.name, c.summary)
		}
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
	c, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(os.Stderr, "imafs: unknown command %q\n\n%s", args[0], usage())
		return 2
	}
	return c.run(args[1:])
}
