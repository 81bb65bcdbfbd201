package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/imafs/imafs/measurelog"
)

// logClient handles "imafs log ID|--host ..." and any other first word
// than decode/replay (the daemon's client, cmd_client.go). Nil: usage,
// exit 2.
var logClient = runLogClient

const logUsage = `Usage:
  imafs log decode [--format ascii|binary] [--bank ALG] [--input-bank ALG|auto] FILE
      Read the binary measurement list FILE (a kernel's binary_runtime_measurements[_ALG]
      or an imafs list; "-" is stdin) and print it as the kernel would: --format ascii
      (default) or binary; --bank picks the rendering's template digests: sha1 (default,
      the legacy files) or sha256, sha384, sha512 (the *_ALG files).
  imafs log replay [--bank ALG] [--all] [--input-bank ALG|auto] FILE
      Replay FILE's entries into PCRs and print one "PCR-NN: hex" line per PCR the list
      extends, in bank ALG (default sha1, the bank every TPM and kernel keeps). Violations
      extend with 0xff.. as the kernel does. --all prints PCR-00..PCR-23, the format of
      evmctl ima_measurement --pcrs ALG,FILE.
  imafs log binding --id ID [--pid-ns 'pid:[INODE]'] HOSTLIST CONTAINERLIST
      Check that a container's list is bound to the host's ima-nsreg entries (kernel
      source; see imafs log binding --help and docs/keylime.md).
  imafs log ID|--host [...]
      Show a namespace's list (needs the daemon; see imafs log ID --help).

--input-bank names the bank of FILE's template digests (binary_runtime_measurements_sha256
has 32-byte digests). The default, auto, tries sha1, sha256, sha384 and sha512 and takes
the bank in which every template digest matches its entry's data.
Errors (unreadable file, corrupt or torn list) go to stderr with exit status 1; for a
list with a damaged tail the entries before it are still printed.
`

func runLog(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "decode" || args[0] == "replay") {
		return runLogFile(args[0], args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "binding" {
		return runLogBinding(args[1:], stdout, stderr)
	}
	return runClientOrUsage(args, logClient, logUsage, stdout, stderr)
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments (imafs log decode FILE --bank sha256) and returns
// the positionals.
func parseInterspersed(fl *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fl.Parse(args); err != nil {
			return nil, err
		}
		if fl.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fl.Arg(0))
		args = fl.Args()[1:]
	}
}

func runLogFile(word string, args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("imafs log "+word, flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {} // printed below: to stdout for --help, to stderr on errors
	bankName := fl.String("bank", "sha1", "bank of the output's template digests (decode) or of the PCRs (replay)")
	inputBank := fl.String("input-bank", "auto", "bank of FILE's template digests, or auto")
	format := fl.String("format", "ascii", "decode: ascii or binary")
	all := fl.Bool("all", false, "replay: print PCR-00..PCR-23 (evmctl --pcrs format)")
	pos, err := parseInterspersed(fl, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, logUsage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "\n%s", logUsage)
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "imafs log %s: want exactly one FILE\n\n%s", word, logUsage)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "imafs log %s: %v\n", word, err)
		return 1
	}
	bank, err := measurelog.ParseAlgo(*bankName)
	if err == nil && !bank.IsBank() {
		err = fmt.Errorf("%s is not a PCR bank (sha1, sha256, sha384, sha512)", bank)
	}
	if err != nil {
		return fail(fmt.Errorf("--bank: %w", err))
	}
	var f measurelog.Format
	switch *format {
	case "ascii":
		f = measurelog.ASCII
	case "binary":
		f = measurelog.Binary
	default:
		return fail(fmt.Errorf("--format %q: want ascii or binary", *format))
	}
	if word == "replay" && *format != "ascii" {
		return fail(errors.New("--format is for decode"))
	}
	if word == "decode" && *all {
		return fail(errors.New("--all is for replay"))
	}
	data, err := readInput(pos[0])
	if err != nil {
		return fail(err)
	}
	entries, inBank, derr := decodeList(data, *inputBank)
	if derr != nil && len(entries) == 0 && !isDecodeError(derr) {
		return fail(fmt.Errorf("%s: %w", pos[0], derr))
	}
	if err := writeLog(stdout, word, entries, f, bank, *all); err != nil {
		return fail(err)
	}
	if derr != nil {
		return fail(fmt.Errorf("%s (read as a %s list, %d entries before the error): %w", pos[0], inBank, len(entries), derr))
	}
	return 0
}

// writeLog writes what `imafs log decode|replay` prints of entries.
func writeLog(out io.Writer, word string, entries []*measurelog.Entry, f measurelog.Format, bank measurelog.Algo, all bool) error {
	w := bufio.NewWriter(out)
	switch word {
	case "decode":
		var buf []byte
		for _, e := range entries {
			if f == measurelog.ASCII {
				buf = e.AppendASCII(buf[:0], bank)
			} else {
				buf = e.AppendBinary(buf[:0], bank)
			}
			w.Write(buf)
		}
	case "replay":
		p := measurelog.Replay(entries, bank)
		if all {
			w.Write(p.EvmctlPCRs(bank))
		} else {
			for _, i := range p.Touched() {
				fmt.Fprintf(w, "PCR-%02d: %x\n", i, p.Value(bank, i))
			}
		}
	}
	return w.Flush()
}

func isDecodeError(err error) bool {
	var de *measurelog.DecodeError
	return errors.As(err, &de)
}

func readInput(name string) ([]byte, error) {
	if name == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err // *PathError names the operation and file
	}
	return b, nil
}

// decodeList decodes data in the given bank, or with "auto" in the first
// bank where it decodes without error; when none does, in the bank that
// decodes the most entries (sha1 on a tie), with that bank's error.
func decodeList(data []byte, inputBank string) ([]*measurelog.Entry, measurelog.Algo, error) {
	if inputBank != "auto" {
		bank, err := measurelog.ParseAlgo(inputBank)
		if err == nil && !bank.IsBank() {
			err = fmt.Errorf("%s is not a PCR bank", bank)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("--input-bank: %w", err)
		}
		entries, err := measurelog.DecodeBinary(data, bank)
		return entries, bank, err
	}
	var (
		best     []*measurelog.Entry
		bestBank measurelog.Algo
		bestErr  error
	)
	for _, bank := range measurelog.Banks {
		entries, err := measurelog.DecodeBinary(data, bank)
		if err == nil {
			return entries, bank, nil
		}
		if bestBank == 0 || len(entries) > len(best) {
			best, bestBank, bestErr = entries, bank, err
		}
	}
	return best, bestBank, bestErr
}
