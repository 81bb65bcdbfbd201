package metrics

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// server runs ServeListener on 127.0.0.1:0 and returns its /metrics URL.
func server(t *testing.T, reg *imans.Registry, log *logrus.Logger) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, reg, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeListener after cancel: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeListener did not return after cancel")
		}
	})
	return "http://" + ln.Addr().String() + Path
}

func TestServeScrape(t *testing.T) {
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	reg, err := imans.NewRegistry(imans.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })

	pid := harness.StartSleeper(t).Pid
	ns, err := reg.Attach("metrics-a", pid, []byte(`{"ociVersion":"1.0.2"}`))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := policy.Parse("measure func=BPRM_CHECK mask=MAY_EXEC\nmeasure func=FILE_CHECK mask=MAY_READ uid=0\n")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.LoadPolicy(rules); err != nil {
		t.Fatal(err)
	}
	v, err := measurelog.NewViolation("ima-ng", imans.DefaultPCR, "/etc/shadow", measurelog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Record(ns, v); err != nil {
		t.Fatal(err)
	}
	Denied("metrics-a", "fanotify", "invalid-signature")
	Denied("metrics-a", "fanotify", "invalid-signature")
	observe := LatencyObserver("fanotify")
	observe(30 * time.Microsecond)
	observe(2 * time.Millisecond)

	url := server(t, reg, log)
	text := harness.Scrape(t, url)
	for _, line := range []string{
		"imafs_namespaces 1",
		// boot_aggregate, oci-config, the violation.
		`imafs_namespace_entries{namespace="metrics-a"} 3`,
		// The host list: its boot_aggregate, the container's oci-config and
		// violation (the container's zero boot_aggregate is the same entry
		// as the host's: the kernel's duplicate rule keeps one).
		`imafs_namespace_entries{namespace="host"} 3`,
		`imafs_namespace_violations_total{namespace="metrics-a"} 1`,
		`imafs_namespace_violations_total{namespace="host"} 1`,
		`imafs_namespace_policy_rules{namespace="metrics-a"} 2`,
		`imafs_namespace_policy_rules{namespace="host"} 0`,
		`imafs_denials_total{namespace="metrics-a",reason="invalid-signature",source="fanotify"} 2`,
		`imafs_event_latency_seconds_count{source="fanotify"} 2`,
		`imafs_event_latency_seconds_bucket{source="fanotify",le="4e-05"} 1`,
		`imafs_event_latency_seconds_bucket{source="fanotify",le="+Inf"} 2`,
		"# TYPE imafs_namespace_violations_total counter",
		"# TYPE imafs_event_latency_seconds histogram",
	} {
		if !harness.HasLine(text, line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
	if !strings.Contains(text, "\ngo_goroutines ") || !strings.Contains(text, "\nprocess_resident_memory_bytes ") {
		t.Error("scrape lacks the Go runtime and process metrics")
	}

	// Detached: the namespace's series are gone, the host's stay.
	if err := reg.Detach("metrics-a"); err != nil {
		t.Fatal(err)
	}
	text = harness.Scrape(t, url)
	for _, gone := range []string{`namespace="metrics-a"`} {
		if strings.Contains(text, gone) {
			t.Errorf("scrape after detach still has %s", gone)
		}
	}
	for _, line := range []string{"imafs_namespaces 0", `imafs_namespace_entries{namespace="host"} 3`} {
		if !harness.HasLine(text, line) {
			t.Errorf("scrape after detach lacks %q", line)
		}
	}
}

func TestServeBadAddress(t *testing.T) {
	reg, err := imans.NewRegistry(imans.Options{Log: logrus.New()})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for _, addr := range []string{"not-an-address", "127.0.0.1:99999"} {
		err := Serve(context.Background(), addr, reg, nil)
		if err == nil || !strings.Contains(err.Error(), "metrics: listen "+addr) {
			t.Errorf("Serve(%q) = %v, want a listen error naming the address", addr, err)
		}
	}
}
