package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"

	"github.com/imafs/imafs/control"
	"github.com/imafs/imafs/imans"
)

func runPs(args []string) int {
	fl, socket := clientFlags("ps")
	asJSON := fl.Bool("json", false, "print JSON")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	resp, err := control.NewClient(*socket).Call(context.Background(), &control.Request{Op: control.OpPs})
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs ps:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(resp.Namespaces); err != nil {
			fmt.Fprintln(os.Stderr, "imafs ps:", err)
			return 1
		}
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPID\tNAMESPACE\tENTRIES\tVIOLATIONS\tRULES\tPCR10 (SHA256)\tDEGRADED")
	for _, ns := range resp.Namespaces {
		degraded := ns.Degraded
		if degraded == "" {
			degraded = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%s\t%s\n", ns.ID, ns.Pid, ns.Namespace, ns.Entries, ns.Violations, ns.Rules, ns.PCR10SHA256, degraded)
	}
	tw.Flush()
	return 0
}

func runMeasure(args []string) int {
	fl, socket := clientFlags("measure")
	id := fl.String("id", "", "container id, or host (required)")
	name := fl.String("name", "", "name to record (default: the path)")
	fn := fl.String("func", "FILE_CHECK", "hook for the policy match")
	mask := fl.String("mask", "MAY_READ", "access mask for the policy match")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *id == "" || fl.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: imafs measure --id ID [--name NAME] [--func F] [--mask M] [--socket PATH] FILE")
		return 2
	}
	path, err := filepath.Abs(fl.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs measure:", err)
		return 1
	}
	resp, err := control.NewClient(*socket).Call(context.Background(), &control.Request{
		Op: control.OpMeasure, ID: *id, Path: path, Name: *name, Func: *fn, Mask: *mask,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs measure:", err)
		return 1
	}
	if !resp.Measured {
		fmt.Fprintf(os.Stderr, "imafs measure: %s: the policy of %s does not measure it\n", path, *id)
		return 3
	}
	return 0
}

// runLogClient is `imafs log ID|--host [--format ascii|binary] [--bank B] [-f]`.
func runLogClient(args []string) int {
	fl, socket := clientFlags("log")
	host := fl.Bool("host", false, "the host's list (every container's entries)")
	format := fl.String("format", "ascii", "ascii or binary")
	bank := fl.String("bank", "sha1", "PCR bank of the template digests (sha1, sha256)")
	follow := fl.Bool("f", false, "follow: keep printing new entries")
	pos, err := parseInterspersed(fl, args)
	if err != nil {
		return 2
	}
	var id string
	if len(pos) == 1 {
		id = pos[0]
	} else if len(pos) > 1 {
		*host = false // invalid: usage below
	}
	if *host {
		if id != "" {
			id = "" // both: invalid
			*host = false
		} else {
			id = imans.HostID
		}
	}
	if id == "" {
		fmt.Fprintln(os.Stderr, "usage: imafs log ID|--host [--format ascii|binary] [--bank sha1|sha256] [-f] [--socket PATH]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = control.NewClient(*socket).Stream(ctx, &control.Request{
		Op: control.OpLog, ID: id, Format: *format, Bank: *bank, Follow: *follow,
	}, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs log:", err)
		return 1
	}
	return 0
}

// runPolicyClient is `imafs policy ID [--set FILE]`.
func runPolicyClient(args []string) int {
	fl, socket := clientFlags("policy")
	set := fl.String("set", "", "load the rules of FILE (- for stdin) into the namespace")
	pos, err := parseInterspersed(fl, args)
	if err != nil {
		return 2
	}
	var id string
	if len(pos) == 1 {
		id = pos[0]
	}
	if id == "" {
		fmt.Fprintln(os.Stderr, "usage: imafs policy ID|host [--set FILE] [--socket PATH]")
		return 2
	}
	client := control.NewClient(*socket)
	if *set != "" {
		var text []byte
		var err error
		if *set == "-" {
			text, err = readAllStdin()
		} else {
			text, err = os.ReadFile(*set)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "imafs policy:", err)
			return 1
		}
		if _, err := client.Call(context.Background(), &control.Request{Op: control.OpPolicySet, ID: id, Policy: string(text), PolicyBytes: text}); err != nil {
			fmt.Fprintln(os.Stderr, "imafs policy:", err)
			return 1
		}
		return 0
	}
	resp, err := client.Call(context.Background(), &control.Request{Op: control.OpPolicyGet, ID: id})
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs policy:", err)
		return 1
	}
	if resp.PolicyBytes != nil {
		os.Stdout.Write(resp.PolicyBytes)
	} else {
		fmt.Print(resp.Policy)
	}
	return 0
}

func readAllStdin() ([]byte, error) { return io.ReadAll(os.Stdin) }
