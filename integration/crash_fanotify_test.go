package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imafs/imafs/integration/harness"
)

// crashExec is one exec of a container's workload as its log tells it.
type crashExec struct {
	index int
	// at is the time logged after the exec returned ($EPOCHREALTIME,
	// truncated to µs): the exec returned before at+1µs, and the next exec
	// of the loop started after at.
	at time.Time
}

// returnedBefore: the exec certainly returned before t.
func (e crashExec) returnedBefore(t time.Time) bool { return !e.at.Add(time.Microsecond).After(t) }

// crashContainer is a runc container of TestCrashFanotify with its
// workload: scripts /x/cK-I of distinct contents, run one after the other.
type crashContainer struct {
	k      int
	c      *harness.RuncContainer
	root   string   // the tmpfs rootfs, as the host sees it
	digest []string // sha256 hex of /x/cK-I by I
	log    string   // host path of the workload's log
	done   chan error
}

func (cc *crashContainer) name(i int) string { return fmt.Sprintf("/x/c%d-%d", cc.k, i) }

// crashWindow is one kill: from the SIGKILL to the restarted daemon's
// control socket answering (its containers are restored and watched before
// that: internal/daemon restores before the socket listens).
type crashWindow struct{ kill, ready time.Time }

// readCrashLog parses the workload log: "I SEC.USEC" per exec that
// returned 0, "E I SEC.USEC" per exec that failed.
func readCrashLog(path string) (ok []crashExec, failed []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	for _, l := range lines(string(b)) {
		f := strings.Fields(l)
		if len(f) != 2 {
			failed = append(failed, l)
			continue
		}
		i, err1 := strconv.Atoi(f[0])
		sec, usec, found := strings.Cut(f[1], ".")
		s, err2 := strconv.ParseInt(sec, 10, 64)
		us, err3 := strconv.ParseInt(usec, 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || !found || len(usec) != 6 {
			return nil, nil, fmt.Errorf("%s: bad line %q", path, l)
		}
		ok = append(ok, crashExec{index: i, at: time.Unix(s, us*1000)})
	}
	return ok, failed, nil
}

// countLines counts the lines of path (0 if it does not exist yet).
func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte{'\n'})
}

// evmctlMatches checks with evmctl that the binary list in file replays to
// the PCR 10 values ps reports for row (both banks). A list with violations
// needs --ignore-violations, as a kernel's does: evmctl then extends them
// with 0xff.. as the kernel did.
func evmctlMatches(t *testing.T, file string, row nsInfo) {
	t.Helper()
	dir := t.TempDir()
	args := []string{"ima_measurement"}
	if row.Violations > 0 {
		args = append(args, "--ignore-violations")
	}
	for bank, v := range map[string]string{"sha1": row.PCR10SHA1, "sha256": row.PCR10SHA256} {
		var b strings.Builder
		for i := 0; i < 24; i++ {
			if i == 10 {
				fmt.Fprintf(&b, "PCR-%02d: %s\n", i, v)
			} else {
				fmt.Fprintf(&b, "PCR-%02d: %s\n", i, strings.Repeat("0", len(v)))
			}
		}
		p := filepath.Join(dir, "pcrs-"+bank)
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--pcrs", bank+","+p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "evmctl", append(args, file)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Matched per TPM bank") {
		t.Errorf("%s: evmctl %v: %v\n%s", row.ID, args, err, out)
	}
}

// TestCrashFanotify: issue 5's promise with real exec events. Three runc
// containers (attached by the OCI hook, rootfs a tmpfs this test mounts)
// each exec thousands of distinct scripts, one after the other, under
// `imafs serve --fanotify` with `measure func=BPRM_CHECK mask=MAY_EXEC`
// written by their root. The daemon is killed with SIGKILL several times in
// the middle and restarted on the same state directory each time while the
// workloads go on. At the end, in each container's list read from inside
// the container (the tree revived without restarting it):
//
//   - every exec outside the windows from a kill to the restarted daemon's
//     readiness (in particular every exec that returned before a kill: it
//     was allowed by a live daemon) has its entry, with the sha256 of its
//     script, in the order the execs ran;
//   - no entry belongs to another container, none is duplicated;
//   - ps's PCR 10 (sha1 and sha256) is the replay of the binary list
//     (measurelog, `imafs log replay`, evmctl), and the host list holds
//     every container entry in order;
//   - the execs in a window wait for the restarted daemon (the keeper
//     process holds the containers' fanotify groups) and are measured by
//     it; the only ones missing are those the killed daemon had read and
//     not answered, which the restarted daemon allows with a violation
//     entry (<unanswered-by-previous-daemon>): at most one per container
//     and kill (each workload execs one file at a time). Their number
//     and the windows are logged.
func TestCrashFanotify(t *testing.T) {
	needFanotifyDaemon(t)
	harness.RequireTools(t, "evmctl")
	const (
		nContainers  = 3
		perContainer = 2000
	)
	killAt := []int{900, 2300, 3700} // execs logged in all containers
	d := startDaemon(t, "--fanotify")
	var cs []*crashContainer
	for k := 0; k < nContainers; k++ {
		cc := &crashContainer{k: k, root: tmpfsRootfs(t), done: make(chan error, 1)}
		x := filepath.Join(cc.root, "x")
		if err := os.Mkdir(x, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < perContainer; i++ {
			content := fmt.Sprintf("#!/bin/sh\n: container %d script %d\n", k, i)
			sum := sha256.Sum256([]byte(content))
			cc.digest = append(cc.digest, hex.EncodeToString(sum[:]))
			if err := os.WriteFile(filepath.Join(x, fmt.Sprintf("c%d-%d", k, i)), []byte(content), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cc.log = filepath.Join(cc.root, "tmp", "exec.log")
		cc.c = harness.NewRuncContainer(t, harness.RuncOptions{Hooks: hooks(d), Rootfs: cc.root, Capabilities: []string{"CAP_SYS_ADMIN"}})
		runIn(t, cc.c, "sh", "-c", "echo 'measure func=BPRM_CHECK mask=MAY_EXEC' > "+ima+"/policy")
		cs = append(cs, cc)
	}

	// The workloads: exec, then log its index and the time it returned
	// (busybox ash's $EPOCHREALTIME: CLOCK_REALTIME, µs; its date has no %N).
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	start := time.Now()
	for _, cc := range cs {
		loop := fmt.Sprintf(`i=0
while [ $i -lt %d ]; do
	if /x/c%d-$i; then echo "$i $EPOCHREALTIME"; else echo "E $i $EPOCHREALTIME"; fi >> /tmp/exec.log
	i=$((i+1))
done`, perContainer, cc.k)
		cmd := cc.c.Command(ctx, 0, "sh", "-c", loop)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: start workload: %v", cc.c.ID, err)
		}
		go func(cc *crashContainer) {
			err := cmd.Wait()
			if err != nil {
				err = fmt.Errorf("%w: %s", err, stderr.String())
			}
			cc.done <- err
		}(cc)
	}
	var windows []crashWindow
	for _, threshold := range killAt {
		for {
			n := 0
			for _, cc := range cs {
				n += countLines(cc.log)
			}
			if n >= threshold {
				break
			}
			if time.Since(start) > 60*time.Second {
				t.Fatalf("only %d execs logged after %v", n, time.Since(start))
			}
			time.Sleep(5 * time.Millisecond)
		}
		w := crashWindow{kill: time.Now()}
		kill9(t, d)
		d = restartDaemon(t, d, "--fanotify")
		w.ready = time.Now()
		windows = append(windows, w)
		if n := strings.Count(d.logText(), "fanotify: watching container"); n != nContainers {
			t.Errorf("restarted daemon watches %d containers, want %d:\n%s", n, nContainers, d.logText())
		}
		t.Logf("kill %d at %v after the workloads started (%d execs logged); restarted daemon ready %v after the kill",
			len(windows), w.kill.Sub(start), threshold, w.ready.Sub(w.kill))
	}
	for _, cc := range cs {
		select {
		case err := <-cc.done:
			if err != nil {
				t.Fatalf("%s: workload: %v", cc.c.ID, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s: workload did not finish: %v", cc.c.ID, ctx.Err())
		}
	}
	t.Logf("workloads done after %v", time.Since(start))

	ps := d.ps(t)
	for _, cc := range cs {
		if ps[cc.c.ID].Pid != cc.c.Pid {
			t.Errorf("%s not restored: %+v", cc.c.ID, ps[cc.c.ID])
		}
	}
	hostEntries := checkReplay(t, d, ps["host"], binaryLog(t, d, "host"))
	hostPos := map[string]int{}
	for i, e := range hostEntries {
		if _, digest, err := e.FileDigest(); err == nil {
			hostPos[e.Name()+" "+hex.EncodeToString(digest)] = i
		}
	}
	var totalRequired, totalBeforeFirstKill int
	gapTotal := make([]int, len(windows))
	for _, cc := range cs {
		id := cc.c.ID
		execs, failed, err := readCrashLog(cc.log)
		if err != nil {
			t.Fatal(err)
		}
		if len(failed) > 0 {
			t.Errorf("%s: %d execs failed (measure-only policy, fail-open: none should), first %q", id, len(failed), failed[0])
		}
		if len(execs) != perContainer {
			t.Errorf("%s: %d execs logged, want %d", id, len(execs), perContainer)
		}
		for j, e := range execs {
			if e.index != j {
				t.Fatalf("%s: log line %d is exec %d", id, j, e.index)
			}
		}

		// The lists as root in the container reads them (the tree was
		// revived by each restart without the container's help).
		list, err := cc.c.Exec(0, "cat", ima+"/ascii_runtime_measurements")
		if err != nil {
			t.Fatalf("%s: list unreadable after the restarts: %v", id, err)
		}
		bin, err := cc.c.Exec(0, "cat", ima+"/binary_runtime_measurements")
		if err != nil {
			t.Fatalf("%s: binary list: %v", id, err)
		}
		entries := checkReplay(t, d, ps[id], binaryLog(t, d, id))
		binFile := filepath.Join(t.TempDir(), "binary_runtime_measurements")
		if err := os.WriteFile(binFile, []byte(bin), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := harness.Run(imafsBin, "log", "replay", "--bank", "sha256", binFile); err != nil {
			t.Errorf("%s: %v", id, err)
		} else if want := "PCR-10: " + ps[id].PCR10SHA256; !strings.Contains(out, want+"\n") {
			t.Errorf("%s: imafs log replay of the container's binary list: %q, want %q", id, out, want)
		}
		evmctlMatches(t, binFile, ps[id])
		ascii := lines(list)
		if len(ascii) != len(entries) {
			t.Errorf("%s: ascii list read in the container has %d entries, the binary list %d", id, len(ascii), len(entries))
		}

		// Every /x entry: this container's script, right digest, once, in
		// exec order; and in the host list, in the same order.
		pos := map[int]int{} // exec index → list position
		last, lastHost := -1, -1
		for p, l := range ascii {
			f := strings.Fields(l)
			if len(f) != 5 || !strings.HasPrefix(f[4], "/x/") {
				continue
			}
			var k, i int
			if _, err := fmt.Sscanf(f[4], "/x/c%d-%d", &k, &i); err != nil || k != cc.k || i < 0 || i >= perContainer {
				t.Errorf("%s: entry of another container or unknown file: %q", id, l)
				continue
			}
			if f[3] != "sha256:"+cc.digest[i] {
				t.Errorf("%s: %s measured as %s, want sha256:%s", id, f[4], f[3], cc.digest[i])
			}
			if _, dup := pos[i]; dup {
				t.Errorf("%s: %s measured twice", id, f[4])
			}
			if i <= last {
				t.Errorf("%s: %s listed after exec %d: out of order", id, f[4], last)
			}
			last = i
			pos[i] = p
			if p < len(entries) && entries[p].Name() != f[4] {
				t.Errorf("%s: ascii entry %d is %s, binary %s", id, p, f[4], entries[p].Name())
			}
			h, ok := hostPos[f[4]+" "+cc.digest[i]]
			if !ok {
				t.Errorf("%s: %s not in the host list", id, f[4])
			} else if h <= lastHost {
				t.Errorf("%s: %s out of order in the host list", id, f[4])
			} else {
				lastHost = h
			}
		}

		// The strict promise: an exec that does not overlap a window (from
		// a kill to the restarted daemon's readiness) was allowed by a live
		// daemon watching the container, so after its entry was journaled.
		required, beforeFirstKill, unmeasured := 0, 0, 0
		var lost []string                         // executed outside every window, not listed
		gaps := make([]int, len(windows))         // unmeasured execs per window
		gapEnd := make([]time.Time, len(windows)) // last unmeasured exec's return per window
		measuredIn := make([]int, len(windows))   // measured execs overlapping the window
		for j, e := range execs {
			started := start // the exec started after this
			if j > 0 {
				started = execs[j-1].at
			}
			_, listed := pos[e.index]
			if e.returnedBefore(windows[0].kill) {
				beforeFirstKill++
			}
			in := -1
			for w, win := range windows {
				if !e.returnedBefore(win.kill) && !started.After(win.ready) {
					in = w
					break
				}
			}
			switch {
			case in < 0:
				required++
				if !listed {
					lost = append(lost, cc.name(e.index))
				}
			case listed:
				measuredIn[in]++
			default:
				unmeasured++
				gaps[in]++
				gapEnd[in] = e.at
			}
		}
		if len(lost) > 0 {
			t.Errorf("%s: %d execs ran outside every kill-to-restart window (allowed by a live daemon) but are not in the list: %s",
				id, len(lost), strings.Join(lost[:min(len(lost), 20)], " "))
		}
		if required+unmeasured+crashSum(measuredIn) != len(execs) || len(pos) != required+crashSum(measuredIn) {
			t.Errorf("%s: %d listed, %d required, %d measured in windows, %d unmeasured, %d execs", id, len(pos), required, crashSum(measuredIn), unmeasured, len(execs))
		}
		var per []string
		for w := range windows {
			gapTotal[w] += gaps[w]
			s := fmt.Sprintf("kill %d: %d unmeasured", w+1, gaps[w])
			if gaps[w] > 0 {
				s += fmt.Sprintf(" (last returned %v after the kill)", gapEnd[w].Sub(windows[w].kill).Round(time.Millisecond))
			}
			per = append(per, s+fmt.Sprintf(", %d measured", measuredIn[w]))
		}
		t.Logf("%s: %d execs: %d returned before the first kill, %d outside the windows (all listed); %s; list %d entries, %d violations",
			id, len(execs), beforeFirstKill, required, strings.Join(per, "; "), len(entries), ps[id].Violations)
		stale := 0
		for _, e := range entries {
			if e.Violation && e.Name() == "<unanswered-by-previous-daemon>" {
				stale++
			}
		}
		if unmeasured > stale || stale > len(windows) {
			t.Errorf("%s: %d execs unmeasured, %d events the killed daemons left unanswered (violation entries), %d kills: want unmeasured <= unanswered <= kills",
				id, unmeasured, stale, len(windows))
		}
		totalRequired += required
		totalBeforeFirstKill += beforeFirstKill
	}
	var per []string
	for w, win := range windows {
		per = append(per, fmt.Sprintf("kill %d: %d unmeasured, kill to ready %v", w+1, gapTotal[w], win.ready.Sub(win.kill).Round(time.Millisecond)))
	}
	t.Logf("total: %d execs, %d before the first kill, %d outside the windows, all listed; %s",
		nContainers*perContainer, totalBeforeFirstKill, totalRequired, strings.Join(per, "; "))
	// The kills must have hit a running workload, and a restarted daemon
	// must have measured again: some execs after the first kill lie outside
	// every window.
	if totalBeforeFirstKill < killAt[0]/2 || totalRequired <= totalBeforeFirstKill {
		t.Errorf("%d execs before the first kill, %d outside the windows: the kills did not hit a running workload, or no restarted daemon measured", totalBeforeFirstKill, totalRequired)
	}
}

func crashSum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}
