package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/integration/harness"
)

func TestRegisterSource(t *testing.T) {
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	reg, err := imans.NewRegistry(imans.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	url := server(t, reg, log)

	stats := SourceStats{Events: 10, Allowed: 8, Denied: 2, Measured: 5, Errors: 1, Timeouts: 3, Overflows: 4, Wait: 1500 * time.Millisecond, Pending: 7}
	unregister := RegisterSource("test-src", func() SourceStats { return stats })
	text := harness.Scrape(t, url)
	for _, line := range []string{
		`imafs_source_events_total{source="test-src"} 10`,
		`imafs_source_answers_total{answer="allow",source="test-src"} 8`,
		`imafs_source_answers_total{answer="deny",source="test-src"} 2`,
		`imafs_source_measured_total{source="test-src"} 5`,
		`imafs_source_failures_total{kind="error",source="test-src"} 1`,
		`imafs_source_failures_total{kind="timeout",source="test-src"} 3`,
		`imafs_source_failures_total{kind="overflow",source="test-src"} 4`,
		`imafs_source_wait_seconds_total{source="test-src"} 1.5`,
		`imafs_queue_depth{source="test-src"} 7`,
	} {
		if !harness.HasLine(text, line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
	// Read on every scrape.
	stats.Events = 11
	if text := harness.Scrape(t, url); !harness.HasLine(text, `imafs_source_events_total{source="test-src"} 11`) {
		t.Error("a later scrape did not read the source again")
	}

	// A second registration under the same name replaces the first; the
	// first one's unregister leaves it alone.
	unregister2 := RegisterSource("test-src", func() SourceStats { return SourceStats{Events: 99} })
	unregister()
	if text := harness.Scrape(t, url); !harness.HasLine(text, `imafs_source_events_total{source="test-src"} 99`) {
		t.Error("unregister of a replaced registration removed its successor")
	}
	unregister2()
	if text := harness.Scrape(t, url); strings.Contains(text, `source="test-src"`) {
		t.Error("series still present after unregister")
	}
}

func TestSetSourceInfo(t *testing.T) {
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	reg, err := imans.NewRegistry(imans.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	url := server(t, reg, log)
	SetSourceInfo("test-mmap", "tracepoint")
	if text := harness.Scrape(t, url); !harness.HasLine(text, `imafs_source_info{mechanism="tracepoint",source="test-mmap"} 1`) {
		t.Errorf("scrape lacks the source info:\n%s", text)
	}
	SetSourceInfo("test-mmap", "unavailable")
	text := harness.Scrape(t, url)
	if !harness.HasLine(text, `imafs_source_info{mechanism="unavailable",source="test-mmap"} 1`) || strings.Contains(text, `mechanism="tracepoint",source="test-mmap"`) {
		t.Errorf("a second SetSourceInfo did not replace the first:\n%s", text)
	}
	SetSourceInfo("test-mmap", "")
	if text := harness.Scrape(t, url); strings.Contains(text, `source="test-mmap"`) {
		t.Error("series still present after SetSourceInfo with no mechanism")
	}
}
