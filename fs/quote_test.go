package fs

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
)

// TestQuoteFile: container root writes a nonce to quote and reads back its
// own namespace's bundle; the host view and unprivileged callers are
// refused; without a Quoter the file answers ENODEV.
func TestQuoteFile(t *testing.T) {
	needRoot(t)
	for _, withQuoter := range []bool{true, false} {
		t.Run(fmt.Sprint("quoter=", withQuoter), func(t *testing.T) {
			log := logrus.New()
			log.SetLevel(logrus.WarnLevel)
			reg, err := imans.NewRegistry(imans.Options{Log: log})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { reg.Close() })
			var quoter Quoter
			if withQuoter {
				quoter = func(ns *imans.Namespace, nonce []byte) ([]byte, error) {
					return []byte(fmt.Sprintf(`{"id":%q,"nonce":%q}`, ns.ID, hex.EncodeToString(nonce))), nil
				}
			}
			dir := t.TempDir()
			srv, err := Mount(dir, NewRoot(Options{Registry: reg, Log: log, Quoter: quoter}))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := srv.Unmount(); err != nil {
					syscall.Unmount(dir, syscall.MNT_DETACH)
				}
			})
			quote := filepath.Join(dir, "integrity/ima/quote")
			pid := harness.StartSleeper(t).Pid
			if _, err := reg.Attach("q", pid, nil); err != nil {
				t.Fatal(err)
			}
			script := "exec 3<>" + quote + " && echo 00ff10 >&3 && cat <&3"
			out, err := run(t, pid, "sh", "-c", script)
			if !withQuoter {
				if err == nil || !strings.Contains(err.Error(), "No such device") {
					t.Errorf("without a vTPM: %q, %v; want ENODEV", out, err)
				}
				return
			}
			if err != nil || out != `{"id":"q","nonce":"00ff10"}` {
				t.Errorf("container root: %q, %v", out, err)
			}
			if _, err := run(t, pid, "sh", "-c", "exec 3<>"+quote+" && echo nothex >&3"); err == nil {
				t.Error("a malformed nonce was accepted")
			}
			if _, err := run(t, pid, "sh", "-c", "exec 3<>"+quote+" && cat <&3"); err == nil || !strings.Contains(err.Error(), "Invalid argument") {
				t.Errorf("read before a nonce: %v, want EINVAL", err)
			}
			if _, err := run(t, pid, "setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "sh", "-c", script); err == nil || !strings.Contains(err.Error(), "Permission denied") {
				t.Errorf("unprivileged container user: %v, want EACCES", err)
			}
			if _, err := run(t, 0, "sh", "-c", script); err == nil || !strings.Contains(err.Error(), "No such device") {
				t.Errorf("host: %v, want ENODEV (no host vTPM)", err)
			}
		})
	}
}
