package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/imafs/imafs/control"
	"github.com/imafs/imafs/vtpm"
)

// opQuote is the control request `imafs quote` sends. Wire format (one JSON
// line each way, like every control request):
//
//	request:  {"op":"quote","id":"CONTAINER-ID","nonce":"HEX"}
//	response: {"ok":true,"bundle":{...vtpm.Bundle...}}
//	          {"ok":false,"error":"..."}
const opQuote = "quote"

type quoteRequest struct {
	Op    string `json:"op"`
	ID    string `json:"id"`
	Nonce string `json:"nonce"`
}

type quoteResponse struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Bundle json.RawMessage `json:"bundle,omitempty"`
}

// parseInterleaved parses flags that may follow positional arguments
// ("imafs verify BUNDLE --nonce HEX") and returns the positionals.
func parseInterleaved(fl *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fl.Parse(args); err != nil {
			return nil, err
		}
		args = fl.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func runQuote(args []string) int {
	fl := flag.NewFlagSet("quote", flag.ContinueOnError)
	socket := fl.String("socket", control.DefaultSocket, "daemon control socket")
	nonceHex := fl.String("nonce", "", "verifier's nonce, hex (required)")
	out := fl.String("o", "", "write the bundle to this file instead of stdout")
	timeout := fl.Duration("timeout", 60*time.Second, "give up after this long")
	pos, err := parseInterleaved(fl, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(os.Stderr, "usage: imafs quote ID --nonce HEX [-o FILE] [--socket PATH]")
		return 2
	}
	nonce, err := control.ParseNonce(*nonceHex)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs quote:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	bundle, err := requestQuote(ctx, *socket, pos[0], nonce)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs quote:", err)
		return 1
	}
	data, err := bundle.Marshal()
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs quote:", err)
		return 1
	}
	if *out == "" {
		_, err = os.Stdout.Write(data)
	} else {
		err = os.WriteFile(*out, data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs quote:", err)
		return 1
	}
	return 0
}

// requestQuote asks the daemon for namespace id's bundle and checks that it
// answers the nonce (the full check is `imafs verify`).
func requestQuote(ctx context.Context, socket, id string, nonce []byte) (*vtpm.Bundle, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("connect to imafs daemon at %s: %w", socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	req, err := json.Marshal(quoteRequest{Op: opQuote, ID: id, Nonce: hex.EncodeToString(nonce)})
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(append(req, '\n')); err != nil {
		return nil, fmt.Errorf("quote %s: send request: %w", id, err)
	}
	line, err := bufio.NewReaderSize(conn, 1<<20).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return nil, fmt.Errorf("quote %s: read response: %w", id, err)
	}
	var resp quoteResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("quote %s: decode response: %w", id, err)
	}
	if !resp.OK {
		return nil, fmt.Errorf("quote %s: daemon: %s", id, resp.Error)
	}
	b, err := vtpm.ParseBundle(resp.Bundle)
	if err != nil {
		return nil, fmt.Errorf("quote %s: %w", id, err)
	}
	if b.ID != id || hex.EncodeToString(b.Nonce) != hex.EncodeToString(nonce) {
		return nil, fmt.Errorf("quote %s: daemon answered for %q with nonce %x", id, b.ID, []byte(b.Nonce))
	}
	return b, nil
}

func runVerify(args []string) int {
	fl := flag.NewFlagSet("verify", flag.ContinueOnError)
	nonceHex := fl.String("nonce", "", "the nonce the bundle must answer, hex (required)")
	akFile := fl.String("ak", "", "PEM file of the namespace's trusted attestation key (pins the key)")
	hostAKFile := fl.String("host-ak", "", "PEM file of the host's trusted attestation key: the bundle's key must be bound to its id by it")
	id := fl.String("id", "", "require the bundle to be for this namespace")
	akOut := fl.String("ak-out", "", "after a successful verification, write the bundle's attestation key (PEM) here, to pin it next time")
	quiet := fl.Bool("q", false, "print nothing on success")
	pos, err := parseInterleaved(fl, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(os.Stderr, "usage: imafs verify BUNDLE|- --nonce HEX [--ak PEMFILE | --host-ak PEMFILE] [--id ID] [--ak-out FILE] [-q]")
		return 2
	}
	nonce, err := control.ParseNonce(*nonceHex)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs verify:", err)
		return 2
	}
	var data []byte
	if pos[0] == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(pos[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs verify:", err)
		return 2
	}
	opts, err := trustOptions(*akFile, *hostAKFile, *id)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs verify:", err)
		return 2
	}
	b, err := vtpm.ParseBundle(data)
	if err == nil {
		err = vtpm.Verify(b, nonce, opts...)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs verify: FAILED:", err)
		return 1
	}
	if *akOut != "" {
		if err := os.WriteFile(*akOut, []byte(b.AKPEM), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "imafs verify:", err)
			return 1
		}
	}
	if !*quiet {
		var trust string
		switch {
		case *hostAKFile != "":
			trust = "attestation key bound to " + b.ID + " by the pinned host key"
		case *akFile != "":
			trust = "attestation key pinned"
		default:
			trust = "attestation key NOT pinned (--ak or --host-ak): proves self-consistency only"
		}
		fmt.Printf("OK %s: %d entries; sha1 PCRs %s; sha256 PCRs %s; %s\n",
			b.ID, b.Entries, b.PCRs["sha1"], b.PCRs["sha256"], trust)
	}
	return 0
}

// trustOptions are the verify options of --ak, --host-ak and --id.
func trustOptions(akFile, hostAKFile, id string) ([]vtpm.VerifyOption, error) {
	var opts []vtpm.VerifyOption
	for _, k := range []struct {
		file string
		with func(pem []byte) (vtpm.VerifyOption, error)
	}{
		{akFile, func(pem []byte) (vtpm.VerifyOption, error) {
			ak, err := vtpm.ParseAKPEM(pem)
			return vtpm.WithTrustedAK(ak), err
		}},
		{hostAKFile, func(pem []byte) (vtpm.VerifyOption, error) {
			ak, err := vtpm.ParseAKPEM(pem)
			return vtpm.WithTrustedHostAK(ak), err
		}},
	} {
		if k.file == "" {
			continue
		}
		pem, err := os.ReadFile(k.file)
		if err != nil {
			return nil, err
		}
		opt, err := k.with(pem)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.file, err)
		}
		opts = append(opts, opt)
	}
	if id != "" {
		opts = append(opts, vtpm.WithID(id))
	}
	return opts, nil
}
