package metrics

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SourceStats are a measurement source's running totals (since it started),
// read on every scrape from the function given to RegisterSource: a source
// that already keeps counters (fanotify.Engine.Stats) exposes them without
// a call on its hot path.
type SourceStats struct {
	Events    uint64        // events received
	Allowed   uint64        // answered allow
	Denied    uint64        // answered deny
	Measured  uint64        // entries recorded
	Errors    uint64        // events whose handling failed (answered by the failure mode)
	Timeouts  uint64        // events answered by a timeout
	Overflows uint64        // events answered because a queue was full
	Wait      time.Duration // total time tasks waited for an answer
	Pending   uint64        // events received and not yet answered (imafs_queue_depth)
}

type sourceEntry struct{ stats func() SourceStats }

var sources = struct {
	sync.Mutex
	byName map[string]*sourceEntry
	info   map[string]string // source → mechanism (SetSourceInfo)
}{byName: map[string]*sourceEntry{}, info: map[string]string{}}

// SetSourceInfo says how measurement source name runs (imafs_source_info
// {source=name, mechanism=mechanism} 1): "fanotify", "tracepoint",
// "bpf-lsm", "off", or "unavailable" when it was asked for and could not
// start. The last call for a name wins; "" removes it.
func SetSourceInfo(name, mechanism string) {
	sources.Lock()
	defer sources.Unlock()
	if mechanism == "" {
		delete(sources.info, name)
		return
	}
	sources.info[name] = mechanism
}

// RegisterSource makes stats (safe for concurrent use) part of every scrape
// under the label source=name, until the returned function is called. A
// second registration of the same name replaces the first.
func RegisterSource(name string, stats func() SourceStats) (unregister func()) {
	e := &sourceEntry{stats: stats}
	sources.Lock()
	sources.byName[name] = e
	sources.Unlock()
	return func() {
		sources.Lock()
		// Only our own registration: a later one for the same name stays.
		if sources.byName[name] == e {
			delete(sources.byName, name)
		}
		sources.Unlock()
	}
}

var (
	sourceEventsDesc = prometheus.NewDesc("imafs_source_events_total",
		"Events a measurement source received.", []string{"source"}, nil)
	sourceAnswersDesc = prometheus.NewDesc("imafs_source_answers_total",
		"Events a measurement source answered, by answer (allow, deny).", []string{"source", "answer"}, nil)
	sourceMeasuredDesc = prometheus.NewDesc("imafs_source_measured_total",
		"Entries a measurement source recorded.", []string{"source"}, nil)
	sourceFailuresDesc = prometheus.NewDesc("imafs_source_failures_total",
		"Events a measurement source answered by its failure mode, by kind (error, timeout, overflow).", []string{"source", "kind"}, nil)
	sourceWaitDesc = prometheus.NewDesc("imafs_source_wait_seconds_total",
		"Total time tasks waited for a measurement source's answer.", []string{"source"}, nil)
	queueDepthDesc = prometheus.NewDesc("imafs_queue_depth",
		"Events a measurement source has received and not yet answered.", []string{"source"}, nil)
	sourceInfoDesc = prometheus.NewDesc("imafs_source_info",
		"1 for each measurement source with the mechanism it runs with (off: not started; unavailable: asked for, failed to start).",
		[]string{"source", "mechanism"}, nil)
)

// sourcesCollector reads every registered source on scrape.
type sourcesCollector struct{}

var _ prometheus.Collector = sourcesCollector{}

// Describe implements prometheus.Collector.
func (sourcesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sourceEventsDesc, sourceAnswersDesc, sourceMeasuredDesc, sourceFailuresDesc, sourceWaitDesc, queueDepthDesc, sourceInfoDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (sourcesCollector) Collect(ch chan<- prometheus.Metric) {
	sources.Lock()
	names := make([]string, 0, len(sources.byName))
	fns := make(map[string]func() SourceStats, len(sources.byName))
	for name, e := range sources.byName {
		names = append(names, name)
		fns[name] = e.stats
	}
	info := make(map[string]string, len(sources.info))
	for name, mech := range sources.info {
		info[name] = mech
	}
	sources.Unlock()
	for name, mech := range info {
		ch <- prometheus.MustNewConstMetric(sourceInfoDesc, prometheus.GaugeValue, 1, name, mech)
	}
	sort.Strings(names)
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, name := range names {
		s := fns[name]()
		counter(sourceEventsDesc, s.Events, name)
		counter(sourceAnswersDesc, s.Allowed, name, "allow")
		counter(sourceAnswersDesc, s.Denied, name, "deny")
		counter(sourceMeasuredDesc, s.Measured, name)
		counter(sourceFailuresDesc, s.Errors, name, "error")
		counter(sourceFailuresDesc, s.Timeouts, name, "timeout")
		counter(sourceFailuresDesc, s.Overflows, name, "overflow")
		ch <- prometheus.MustNewConstMetric(sourceWaitDesc, prometheus.CounterValue, s.Wait.Seconds(), name)
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(s.Pending), name)
	}
}
