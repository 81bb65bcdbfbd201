package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/vtpm"
)

// quoteServer answers `quote` control requests from a real swtpm-backed
// namespace, as the daemon is to; it returns the socket path.
func quoteServer(t *testing.T, id string, v *vtpm.SWTPM) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "imafs.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadBytes('\n')
			var req quoteRequest
			resp := quoteResponse{}
			if err := json.Unmarshal(line, &req); err != nil || req.Op != opQuote {
				resp.Error = "bad request"
			} else if req.ID != id {
				resp.Error = "no such namespace: " + req.ID
			} else if n, err := hex.DecodeString(req.Nonce); err != nil {
				resp.Error = err.Error()
			} else if b, err := v.Quote(n); err != nil {
				resp.Error = err.Error()
			} else {
				resp.OK = true
				resp.Bundle, _ = json.Marshal(b)
			}
			out, _ := json.Marshal(resp)
			c.Write(append(out, '\n'))
			c.Close()
		}
	}()
	return sock
}

func TestQuoteVerifyCLI(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed")
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	list := measurelog.NewList()
	v, err := vtpm.StartSWTPM(vtpm.SWTPMOptions{ID: "c1", StateDir: t.TempDir(), List: list, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	if err := v.Resync(nil); err != nil {
		t.Fatal(err)
	}
	ba, err := measurelog.NewBootAggregate("ima-ng", nil, measurelog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	e, err := measurelog.NewEntry("ima-ng", 10, measurelog.Measurement{FileDigest: make([]byte, 32), FileAlgo: measurelog.SHA256, Name: "/bin/sh"})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*measurelog.Entry{ba, e} {
		list.Append(x)
		if err := v.Extend(x); err != nil {
			t.Fatal(err)
		}
	}
	sock := quoteServer(t, "c1", v)
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.json")
	ak := filepath.Join(dir, "ak.pem")

	steps := []struct {
		name string
		args []string
		want int
	}{
		{"quote", []string{"quote", "c1", "--nonce", "c0ffee", "--socket", sock, "-o", bundle}, 0},
		{"quote unknown id", []string{"quote", "c2", "--nonce", "c0ffee", "--socket", sock, "-o", filepath.Join(dir, "x")}, 1},
		{"quote without nonce", []string{"quote", "c1", "--socket", sock}, 2},
		{"verify and pin the key", []string{"verify", bundle, "--nonce", "c0ffee", "--ak-out", ak, "-q"}, 0},
		{"verify with the pinned key", []string{"verify", bundle, "--nonce", "c0ffee", "--ak", ak, "--id", "c1", "-q"}, 0},
		{"verify, host key required but no binding", []string{"verify", bundle, "--nonce", "c0ffee", "--host-ak", ak, "-q"}, 1},
		{"verify, wrong nonce", []string{"verify", bundle, "--nonce", "c0ffef", "-q"}, 1},
		{"verify, wrong id", []string{"verify", bundle, "--nonce", "c0ffee", "--id", "c2", "-q"}, 1},
		{"verify, bad nonce hex", []string{"verify", bundle, "--nonce", "xyz"}, 2},
		{"verify, missing file", []string{"verify", filepath.Join(dir, "nope"), "--nonce", "c0ffee"}, 2},
	}
	for _, s := range steps {
		if got := dispatch(s.args); got != s.want {
			t.Fatalf("%s: imafs %s: exit %d, want %d", s.name, strings.Join(s.args, " "), got, s.want)
		}
	}
	data, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	b, err := vtpm.ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	if b.Entries != 2 || b.ID != "c1" {
		t.Errorf("bundle: %d entries for %q, want 2 for c1", b.Entries, b.ID)
	}
	// A tampered bundle fails through the CLI too.
	b.PCRs["sha1"][10][3] ^= 0x40
	bad, _ := b.Marshal()
	tampered := filepath.Join(dir, "tampered.json")
	if err := os.WriteFile(tampered, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := dispatch([]string{"verify", tampered, "--nonce", "c0ffee", "-q"}); got != 1 {
		t.Errorf("verify tampered bundle: exit %d, want 1", got)
	}
}
