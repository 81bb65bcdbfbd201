package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/imafs/imafs/kernelsrc"
	"github.com/imafs/imafs/measurelog"
)

const bindingUsage = `Usage:
  imafs log binding --id ID [--pid-ns 'pid:[INODE]'] [--input-bank ALG|auto] HOSTLIST CONTAINERLIST
      Check offline that CONTAINERLIST (a container's binary list, as imafs serves it with the
      kernel source) is bound to HOSTLIST (the kernel's binary_runtime_measurements, or imafs's
      host list): every host ima-nsreg entry tagged with one of ID's kernel registrations (only
      those of pid namespace INODE with --pid-ns) is, in order, the container's next entry,
      as ima-ng (or unchanged); every container entry has its host entry. Check HOSTLIST
      against the TPM first (evmctl ima_measurement). Exit 0 when bound, 1 when not or on a
      read error, 2 on usage errors. See docs/keylime.md.
`

// runLogBinding is `imafs log binding`: kernelsrc.VerifyBinding on two files.
func runLogBinding(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("imafs log binding", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {}
	id := fl.String("id", "", "the container's ID (its kernel registrations' label)")
	pidNS := fl.String("pid-ns", "", "only registrations of this pid namespace, as the kernel's record names it: pid:[INODE]")
	inputBank := fl.String("input-bank", "auto", "bank of the lists' template digests, or auto")
	quiet := fl.Bool("q", false, "print nothing when bound")
	pos, err := parseInterspersed(fl, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, bindingUsage)
		return 0
	}
	if err != nil || len(pos) != 2 || *id == "" {
		fmt.Fprintf(stderr, "imafs log binding: want --id ID, HOSTLIST and CONTAINERLIST\n\n%s", bindingUsage)
		return 2
	}
	var lists [2][]*measurelog.Entry
	for i, path := range pos {
		data, err := readInput(path)
		if err == nil {
			lists[i], _, err = decodeList(data, *inputBank)
		}
		if err != nil {
			fmt.Fprintf(stderr, "imafs log binding: %s: %v\n", path, err)
			return 1
		}
	}
	if err := kernelsrc.VerifyBinding(lists[0], lists[1], *id, *pidNS); err != nil {
		fmt.Fprintf(stderr, "imafs log binding: %v\n", err)
		return 1
	}
	if !*quiet {
		fmt.Fprintf(stdout, "bound: %d container entries of %s match the host list (%d entries)\n", len(lists[1]), *id, len(lists[0]))
	}
	return 0
}
