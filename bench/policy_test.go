package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imafs/imafs/control"
	"github.com/imafs/imafs/integration/harness"
)

// BenchmarkPolicyGrowth: a hostile container (root, CAP_SYS_ADMIN) of the
// real daemon loads a 20,000-rule policy file 40 times, then fills its
// policy to the rule limit with 2,500-rule loads and keeps loading, then
// loads a 4 MiB file of comments 10 times (issue 11: 40 such loads took the
// daemon +677 MiB). Reported: the daemon's RSS growth and peak (VmHWM)
// over the idle daemon with the container attached, the time of one stat
// of the policy file in the container at the limit (before: 0.4-0.6 s at
// 800,000 rules, the size rendered per stat), and the rules it holds.
func BenchmarkPolicyGrowth(b *testing.B) {
	harness.RequireRoot(b)
	daemon, client := startDaemon(b)
	files := b.TempDir()
	os.Chmod(files, 0o755)
	gen := func(name string, n int) {
		var sb strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&sb, "measure func=FILE_CHECK mask=MAY_READ fowner=%d\n", i)
		}
		if err := os.WriteFile(filepath.Join(files, name), []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	gen("p20000", 20000)
	gen("p2500", 2500)
	comments := strings.Repeat("# "+strings.Repeat("x", 1021)+"\n", 4<<10)
	os.WriteFile(filepath.Join(files, "c4m"), []byte(comments), 0o644)
	pid := harness.StartSleeper(b, "--mount").Pid
	if _, err := client.Call(context.Background(), &control.Request{Op: control.OpAttach, ID: "hostile", Pid: pid}); err != nil {
		b.Fatal(err)
	}
	pol := "/sys/kernel/security/ima/policy"
	inCtr := func(script string) string {
		out, _ := exec.Command("nsenter", "--target", strconv.Itoa(pid), "--pid", "--mount", "--", "bash", "-c", script).CombinedOutput()
		return string(out)
	}
	inCtr("cat " + pol + " >/dev/null") // first use of the mount
	base := rssKiB(b, daemon.Process.Pid)
	hwm0 := statusKiB(b, daemon.Process.Pid, "VmHWM:")
	var statUs, countUs float64
	for i := 0; i < b.N; i++ {
		loads := fmt.Sprintf("for i in $(seq 40); do echo %[1]s/p20000 > %[2]s; done; "+
			"for i in $(seq 8); do echo %[1]s/p2500 > %[2]s; done; "+
			"for i in $(seq 10); do echo %[1]s/c4m > %[2]s; done; true", files, pol)
		if out := inCtr(loads); !strings.Contains(out, "No space left on device") {
			b.Fatalf("no load hit the limit: %.2000s", out)
		}
		// 1,000 stat(2)s of the policy in the container (bash's [ -s ] is
		// a builtin stat), at the limit, and of a counter for comparison.
		statUs = statLoop(b, inCtr, pol)
		countUs = statLoop(b, inCtr, "/sys/kernel/security/ima/runtime_measurements_count")
	}
	resp, err := client.Call(context.Background(), &control.Request{Op: control.OpPs})
	if err != nil {
		b.Fatal(err)
	}
	rules := -1
	for _, ns := range resp.Namespaces {
		if ns.ID == "hostile" {
			rules = ns.Rules
		}
	}
	b.ReportMetric(float64(rssKiB(b, daemon.Process.Pid)-base)/1024, "rss-growth-MiB")
	b.ReportMetric(float64(statusKiB(b, daemon.Process.Pid, "VmHWM:")-hwm0)/1024, "hwm-growth-MiB")
	b.ReportMetric(statUs, "stat-us")
	b.ReportMetric(countUs, "stat-count-us")
	b.ReportMetric(float64(rules), "rules")
}

// statLoop returns the mean time of one stat(2) of file in 1,000, run by
// bash in the container (inCtr).
func statLoop(b *testing.B, inCtr func(string) string, file string) float64 {
	out := inCtr("s=$(date +%s%N); for i in $(seq 1000); do [ -s " + file + " ]; done; echo $(( ($(date +%s%N) - s) / 1000 ))")
	f := strings.Fields(out)
	if len(f) == 0 {
		b.Fatalf("stat loop: no output")
	}
	total, err := strconv.ParseFloat(f[len(f)-1], 64)
	if err != nil {
		b.Fatalf("stat loop: %q", out)
	}
	return total / 1000
}
