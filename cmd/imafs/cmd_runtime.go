package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/imafs/imafs/ociruntime"
)

// runRuntime: `imafs runtime [--socket S] [--runc PATH] -- RUNC-ARGS...`
// adds the oci-hook hooks to the bundle of create/run and execs runc with
// RUNC-ARGS unchanged. Without "--" every argument goes to runc.
func runRuntime(args []string) int {
	own, runcArgs := []string{}, args
	for i, a := range args {
		if a == "--" {
			own, runcArgs = args[:i], args[i+1:]
			break
		}
	}
	fl, socket := clientFlags("runtime") // the daemon the hooks call
	runc := fl.String("runc", "runc", "the runc binary (looked up in PATH)")
	if err := fl.Parse(own); err != nil || fl.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: imafs runtime [--socket PATH] [--runc PATH] -- RUNC-ARGS...")
		return 2
	}
	bin, err := exec.LookPath(*runc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs runtime:", err)
		return 1
	}
	cwd, _ := os.Getwd()
	if _, bundle := ociruntime.Command(runcArgs, cwd); bundle != "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "imafs runtime:", err)
			return 1
		}
		hook := func(stage string) []ociruntime.Hook {
			return []ociruntime.Hook{{Path: self, Args: []string{"imafs", "oci-hook", "--socket", *socket, stage}}}
		}
		if err := ociruntime.AddHooks(bundle, map[string][]ociruntime.Hook{
			"createRuntime": hook("createRuntime"), "poststop": hook("poststop"),
		}); err != nil {
			fmt.Fprintln(os.Stderr, "imafs runtime:", err)
			return 1
		}
	}
	err = syscall.Exec(bin, append([]string{bin}, runcArgs...), os.Environ())
	fmt.Fprintln(os.Stderr, "imafs runtime: exec", bin+":", err)
	return 1
}
