package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/imafs/imafs/control"
)

// runUpgrade asks the daemon to hand over to a successor (control op
// upgrade) and prints the successor's pid.
func runUpgrade(args []string) int {
	fl, socket := clientFlags("upgrade")
	timeout := fl.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: imafs upgrade [--socket PATH] [--timeout D]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := control.NewClient(*socket).Call(ctx, &control.Request{Op: control.OpUpgrade})
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs upgrade:", err)
		return 1
	}
	fmt.Printf("upgraded: daemon pid %d\n", resp.Pid)
	return 0
}
