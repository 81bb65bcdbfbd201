package fs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/nsresolve"
	"github.com/imafs/imafs/policy"
)

// TestPolicyFileLoader: kernel_read_file_from_path's errors, resolution
// inside the pinned root, and no content in any error.
func TestPolicyFileLoader(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	secret := "root:$y$SECRET-LINE:19000::::::"
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("good", "measure func=BPRM_CHECK\n")
	write("empty", "")
	write("big", strings.Repeat("#\n", 600))
	write("secret", secret+"\n")
	os.WriteFile(filepath.Join(outside, "host"), []byte("measure\n"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Symlink("../../../../../"+outside+"/host", filepath.Join(dir, "up"))
	os.Symlink("/good", filepath.Join(dir, "abs"))
	root, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	load := policyFileLoader(root, 1000)
	tests := []struct {
		path string
		want error // nil: loads
	}{
		{"/good", nil},
		{"/abs", nil}, // an absolute symlink resolves in the root too
		{"/missing", syscall.ENOENT},
		{"/sub", syscall.EINVAL},
		{"/fifo", syscall.EINVAL}, // and never opened (would block)
		{"/empty", syscall.EINVAL},
		{"/big", syscall.EFBIG},
		{"/up", syscall.ENOENT}, // ".." stops at the root
		{"/../../../../" + outside + "/host", syscall.ENOENT},
	}
	for _, tt := range tests {
		data, err := load(tt.path)
		if tt.want == nil && (err != nil || len(data) == 0) {
			t.Errorf("%s: %v", tt.path, err)
		}
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.path, err, tt.want)
		}
	}
	s := &policy.Session{ReadFile: load}
	_, err = s.Write([]byte("/secret\n"), 0)
	if errnoOfPolicy(err) != syscall.EINVAL || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("load of a non-policy file: %v", err)
	}
}

// TestPinRoot: the root is pinned only for the task the caller was
// resolved as (same mount namespace, still alive).
func TestPinRoot(t *testing.T) {
	needRoot(t)
	self := os.Getpid()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &st); err != nil {
		t.Fatal(err)
	}
	mnt := nsresolve.NSID{Dev: st.Dev, Ino: st.Ino}
	tests := []struct {
		name string
		c    nsresolve.Caller
		ok   bool
	}{
		{"self", nsresolve.Caller{PID: self, TID: self, MntNS: mnt}, true},
		{"a thread of self", nsresolve.Caller{PID: self, TID: unix.Gettid(), MntNS: mnt}, true},
		{"another mount namespace", nsresolve.Caller{PID: self, TID: self, MntNS: nsresolve.NSID{Dev: st.Dev, Ino: st.Ino + 1}}, false},
		{"no such task", nsresolve.Caller{PID: 1 << 30, TID: 1 << 30, MntNS: mnt}, false},
	}
	for _, tt := range tests {
		root, err := pinRoot(&tt.c)
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
		if root != nil {
			root.Close()
		}
	}
}

// TestPolicyWriteSessions: O_APPEND, a FLUSH in the middle of a session (a
// child's exit), ERANGE, ENOSPC at the limits; each session all or nothing.
func TestPolicyWriteSessions(t *testing.T) {
	fx := mount(t, imans.Options{PolicyLimits: policy.Limits{MaxRules: 3, MaxBytes: 1 << 20}})
	pol := filepath.Join(fx.ima, "policy")
	host := fx.reg.Host()
	tests := []struct {
		name    string
		script  string
		wantErr string
		want    string // policy after
	}{
		{"append", "echo 'measure func=BPRM_CHECK' >> " + pol, "", "measure func=BPRM_CHECK \n"},
		{"child flush then a bad rule", "exec 3>" + pol + "; echo 'measure func=FILE_CHECK' >&3; /bin/true; echo 'measure func=NOPE' >&3",
			"Invalid argument", "measure func=BPRM_CHECK \n"},
		{"child flush then a good rule", "exec 3>" + pol + "; echo 'measure func=FILE_CHECK' >&3; /bin/true; echo 'measure func=MMAP_CHECK' >&3",
			"", "measure func=BPRM_CHECK \nmeasure func=FILE_CHECK \nmeasure func=MMAP_CHECK \n"},
		{"uid overflow", "echo 'measure uid=99999999999999999999999' > " + pol, "out of range", ""},
		{"beyond the rule limit", "echo 'measure func=MODULE_CHECK' > " + pol, "No space left", ""},
	}
	want := ""
	for _, tt := range tests {
		_, err := run(t, 0, "bash", "-c", tt.script)
		if tt.wantErr == "" && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.wantErr)
		}
		if tt.want != "" {
			want = tt.want
		}
		if got, err := os.ReadFile(pol); err != nil || string(got) != want {
			t.Errorf("%s: policy %q, %v; want %q", tt.name, got, err, want)
		}
		if got := settled(host).String(); got != want {
			t.Errorf("%s: namespace's policy %q", tt.name, got)
		}
	}
}

// settled returns ns's policy once the RELEASE of every writer that was
// closed has been handled (it is asynchronous; readers of the policy file
// wait the same way).
func settled(ns *imans.Namespace) policy.Policy {
	writers.wait(ns, closingDirty)
	return ns.Policy()
}
