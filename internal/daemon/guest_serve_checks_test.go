package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestGuestServe is the whole daemon in the BPF LSM kernel's QEMU guest
// (kernel-patches/test/run-bpf; IMAFS_DAEMON_GUEST=1, elsewhere it skips):
// the real `imafs serve` binary, containers attached with `imafs attach`,
// policies loaded and lists read through the FUSE tree from inside each
// container. See docs/mmap-source.md ("The proof").
func TestGuestServe(t *testing.T) {
	if os.Getenv(daemonGuestEnv) != "1" {
		t.Skipf("runs in the BPF LSM kernel's QEMU guest (kernel-patches/test/run-bpf; %s=1)", daemonGuestEnv)
	}
	d := startServe(t)
	out, err := d.imafs("ps", "--json")
	var rows []struct {
		ID      string            `json:"id"`
		Sources map[string]string `json:"sources"`
	}
	if err == nil {
		err = json.Unmarshal([]byte(out), &rows)
	}
	ok := err == nil && len(rows) > 0 && rows[0].Sources["mmap"] == "bpf-lsm" && rows[0].Sources["fanotify"] == "fanotify"
	var sources map[string]string
	if len(rows) > 0 {
		sources = rows[0].Sources
	}
	gktest(t, ok, "serve: imafs serve runs the fanotify engine and the mmap source's bpf-lsm mechanism (`imafs ps --json` sources): %v %v", sources, err)
	if !ok {
		return
	}
	m := serveMeasure(t, d)
	before := m.listText(t)
	serveAppraise(t, d)
	after := m.listText(t)
	gktest(t, after == before && !strings.Contains(after, "libimafs-nohash.so"),
		"serve: serve-m's list is unchanged by serve-a's workload (%d bytes): another container's mappings never appear", len(after))
	marks := d.entries("fanotify: marked")
	ok = len(marks) >= 2
	for _, e := range marks {
		ok = ok && e["fstype"] == "tmpfs" && e["mount"] == "/" && e["mark"] == "filesystem"
	}
	gktest(t, ok, "serve: the fanotify engine marked only each container's own tmpfs root, never the guest's root: %v", marks)
}

// serveMeasure: with `measure func=MMAP_CHECK mask=MAY_EXEC` every file of
// the glibc userland the workload runs, maps, preloads or dlopens is in the
// container's list with its sha256 and container path, and so is a library
// mapped read-only and mprotect'ed to PROT_EXEC; the kernel's own IMA
// (policy with the same rule) measured the same (path, sha256) set but for
// that one (IMA measures no mprotect: docs/mmap-source.md).
func serveMeasure(t *testing.T, d *serveDaemon) *serveContainer {
	const mprotected = "/usr/lib/libimafs-mprotect.so"
	kernelPolicy(t)
	c := startServeContainer(t, d, "serve-m", "/tmp/serve-m", false)
	c.file(t, "/usr/lib", "libimafs-mprotect.so", append(read(t, c.host(dlopenLib)), "\nmprotect'ed\n"...), nil)
	c.files = append(c.files, mprotected)
	c.policy(t, "measure func=MMAP_CHECK mask=MAY_EXEC\n")
	before := kernelLines(t)
	serveWorkload(t, c, true)
	// The mapping stays until the list has it (the mprotect event has no
	// kernel digest: the daemon opens the mapped file; docs/mmap-source.md).
	r := c.runX(t, guestExec{Args: []string{"/usr/bin/mapper"}, Stdin: "mprotect " + mprotected + "\n", Until: mprotected})
	gktest(t, strings.HasPrefix(r.Out, "ok "), "serve: serve-m's mapper maps %s read-only and mprotect()s it executable: %q", mprotected, r.Out)
	// The list is complete once the last mapping (mprotect) is in it.
	var got map[string][]string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if got = c.list(t); len(got[mprotected]) > 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, p := range c.files {
		want := sha256Hex(read(t, c.host(p)))
		gktest(t, len(got[p]) == 1 && got[p][0] == want,
			"serve: the container's list, read through FUSE inside it, has %s once with its sha256 %s: %q", p, want[:19], got[p])
	}
	for p := range got {
		gktest(t, p == "boot_aggregate" || contains(c.files, p),
			"serve: the container's list names only the container's files (as it sees them): %s", p)
	}
	kernel := kernelSince(t, before, c.files)
	mine := map[string]string{}
	for p, ds := range got {
		if p != "boot_aggregate" && len(ds) > 0 {
			mine[p] = ds[0]
		}
	}
	fmt.Printf("KTEST INFO serve oracle: kernel %d, imafs %d: %s\n", len(kernel), len(mine), describe(kernel))
	gktest(t, len(kernel) == len(c.files)-1 && kernel[mprotected] == "",
		"serve oracle: the kernel measured each of the %d userland files but the mprotect'ed one (%d)", len(c.files)-1, len(kernel))
	compareSets(t, "serve oracle", mine, kernel, map[string]string{mprotected: "mprotect: IMA measures no mprotect"})
	text := c.listText(t)
	host, err := d.imafs("log", c.id)
	gktest(t, err == nil && host == text, "serve: `imafs log %s` on the host prints what the container reads (%d lines): %v", c.id, len(strings.Split(text, "\n"))-1, err)
	return c
}

// serveWorkload runs, in c: env running ls, ls with the marker library preloaded (its
// constructor must run: markerRuns) and the mapper dlopen'ing a library.
func serveWorkload(t *testing.T, c *serveContainer, markerRuns bool) {
	r := c.run(t, nil, "", "/usr/bin/env", "/usr/bin/ls", "/usr/lib")
	gktest(t, r.Status == 0 && strings.Contains(r.Out, "libimafs-marker.so"),
		"serve: %s runs Debian's env and ls (glibc, libselinux, libpcre2): %d %q", c.id, r.Status, r.Out)
	r = c.run(t, []string{"LD_PRELOAD=" + markerLib, "IMAFS_MARKER=/tmp/marker"}, "", "/usr/bin/ls", "/usr/bin")
	gktest(t, r.Status == 0 && c.marked("/tmp/marker") == markerRuns && strings.Contains(r.Out, "constructor ran") == markerRuns,
		"serve: %s runs ls with LD_PRELOAD=%s: the library's constructor ran: %v (%d %q)", c.id, markerLib, markerRuns, r.Status, r.Out)
	r = c.run(t, nil, "dlopen "+dlopenLib+"\nexit\n", "/usr/bin/mapper")
	gktest(t, r.Status == 0 && strings.HasPrefix(r.Out, "ok"),
		"serve: %s's mapper dlopen()s %s: %d %q", c.id, dlopenLib, r.Status, r.Out)
}

// serveAppraise: with `appraise func=MMAP_CHECK` and every userland file
// hashed (security.ima), the programs run; a preloaded library without a
// hash, or with a wrong one, never runs its code: ld.so says it cannot be
// preloaded and ignores it; its dlopen fails; the daemon logs the refusals
// and measures the refused files.
func serveAppraise(t *testing.T, d *serveDaemon) {
	c := startServeContainer(t, d, "serve-a", "/tmp/serve-a", true)
	lib := read(t, c.host(markerLib))
	bad := map[string][]byte{ // path → content (the marker library with a trailer: a digest of its own)
		"/usr/lib/libimafs-nohash.so": append(append([]byte(nil), lib...), "\nno security.ima\n"...),
		"/usr/lib/libimafs-wrong.so":  append(append([]byte(nil), lib...), "\na wrong security.ima\n"...),
	}
	for p, data := range bad {
		var x []byte
		if strings.Contains(p, "wrong") {
			x = imaHash(lib)
		}
		c.file(t, "/usr/lib", strings.TrimPrefix(p, "/usr/lib/"), data, x)
	}
	c.policy(t, "measure func=MMAP_CHECK mask=MAY_EXEC\nappraise func=MMAP_CHECK\n")
	gktest(t, d.logged("mmap source: the policy appraises executable mappings: files are appraised at their open, other mappings refused",
		map[string]string{"id": c.id}, 10*time.Second), "serve: the daemon enforces serve-a's appraise func=MMAP_CHECK")
	serveWorkload(t, c, true)
	causes := map[string]string{"/usr/lib/libimafs-nohash.so": "missing-hash", "/usr/lib/libimafs-wrong.so": "invalid-hash"}
	for _, p := range sortedKeys(bad) {
		r := c.run(t, []string{"LD_PRELOAD=" + p, "IMAFS_MARKER=/tmp/marker"}, "", "/usr/bin/ls", "/usr/bin")
		gktest(t, r.Status == 0 && !c.marked("/tmp/marker") && !strings.Contains(r.Out, "constructor ran") &&
			strings.Contains(r.Out, "'"+p+"'") && strings.Contains(r.Out, "cannot be preloaded"),
			"serve: LD_PRELOAD=%s (%s): its code never runs (no marker), ld.so names it: cannot be preloaded: %d %q", p, causes[p], r.Status, r.Out)
		gktest(t, d.logged("mmap source: appraisal failed, executable mapping refused (EACCES)",
			map[string]string{"id": c.id, "file": p, "cause": causes[p]}, 5*time.Second),
			"serve: the daemon logged the refused mapping of %s, cause %s", p, causes[p])
		r = c.run(t, []string{"IMAFS_MARKER=/tmp/marker"}, "dlopen "+p+"\nexit\n", "/usr/bin/mapper")
		gktest(t, strings.HasPrefix(r.Out, "err") && !c.marked("/tmp/marker"),
			"serve: dlopen(%s) fails, its constructor does not run: %q", p, r.Out)
		r = c.run(t, nil, "mmapx "+p+"\nmmapx "+markerLib+"\nexit\n", "/usr/bin/mapper")
		lines := strings.Split(r.Out, "\n")
		gktest(t, len(lines) > 2 && lines[0] == "err Permission denied" && strings.HasPrefix(lines[1], "ok "),
			"serve: mmap(PROT_READ|PROT_EXEC) of %s fails with EACCES, of the hashed %s succeeds: %q", p, markerLib, r.Out)
	}
	got := c.list(t)
	for _, p := range append(sortedKeys(bad), markerLib, "/usr/lib/x86_64-linux-gnu/libc.so.6") {
		want := sha256Hex(read(t, c.host(p)))
		gktest(t, len(got[p]) == 1 && got[p][0] == want,
			"serve: serve-a's list has %s with its sha256 (refused ones too: IMA measures before it appraises): %q", p, got[p])
	}
}

// kernelPolicy makes sure the kernel's IMA policy measures MMAP_CHECK
// (TestGuestOracle of mmapsrc loaded it in this boot; load it if not).
func kernelPolicy(t *testing.T) {
	const rule = "measure func=MMAP_CHECK mask=MAY_EXEC"
	if strings.Contains(string(read(t, "/sys/kernel/security/ima/policy")), rule) {
		return
	}
	err := os.WriteFile("/sys/kernel/security/ima/policy", []byte(rule+"\n"), 0)
	gktest(t, err == nil, "serve oracle: kernel IMA policy %q loaded: %v", rule, err)
}

func kernelLines(t *testing.T) int {
	return len(strings.Split(string(read(t, "/sys/kernel/security/ima/ascii_runtime_measurements")), "\n"))
}

// kernelSince returns path → "sha256:HEX" of the kernel's entries after
// the first n lines whose path is in paths (the kernel measures each inode
// once: each container's files are fresh copies on its own tmpfs).
func kernelSince(t *testing.T, n int, paths []string) map[string]string {
	out := map[string]string{}
	lines := strings.Split(string(read(t, "/sys/kernel/security/ima/ascii_runtime_measurements")), "\n")
	for _, line := range lines[max(n-1, 0):] {
		if f := strings.SplitN(line, " ", 5); len(f) == 5 && contains(paths, f[4]) {
			out[f[4]] = f[3]
		}
	}
	return out
}

// compareSets checks imafs's (path, digest) set against the kernel's:
// equal but for the explained paths, which imafs lists and the kernel not.
func compareSets(t *testing.T, name string, got, kernel, explained map[string]string) {
	for _, p := range sortedKeys(kernel) {
		gktest(t, got[p] == kernel[p], "%s: imafs lists the kernel's %s %s (got %q)", name, p, kernel[p], got[p])
	}
	for _, p := range sortedKeys(got) {
		if _, ok := kernel[p]; !ok {
			why, ok := explained[p]
			gktest(t, ok, "%s: imafs lists %s %s, which the kernel did not measure, as expected (%s)", name, p, got[p], why)
		}
	}
	for p := range explained {
		gktest(t, got[p] != "" && kernel[p] == "", "%s: %s differs as expected: imafs %q, kernel %q", name, p, got[p], kernel[p])
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func describe(set map[string]string) string {
	var b strings.Builder
	for _, p := range sortedKeys(set) {
		d := set[p]
		if len(d) > 19 {
			d = d[:19]
		}
		fmt.Fprintf(&b, "%s=%s ", p, d)
	}
	return b.String()
}
