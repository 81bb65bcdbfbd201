package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imafs/imafs/imans"
)

const namespaceLabel = "namespace"

var (
	denials = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imafs_denials_total",
		Help: "Accesses a measurement source denied (appraisal failure, fail-closed timeout or overflow).",
	}, []string{namespaceLabel, "source", "reason"})

	eventLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "imafs_event_latency_seconds",
		Help: "Time from a measurement event's arrival to its answer (policy match, hashing, list append, journal).",
		// 10 µs .. ~2.6 s: an already-measured file is tens of µs, a first
		// measurement of a large file seconds.
		Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10),
	}, []string{"source"})
)

// Denied counts one access that source (e.g. "fanotify") refused in the
// namespace nsID ("host" for the host) for reason (e.g. the kernel's
// integrity-audit cause "invalid-signature", or "timeout").
func Denied(nsID, source, reason string) {
	denials.WithLabelValues(nsID, source, reason).Inc()
}

// LatencyObserver returns the function that records, for source, the time
// from an event's arrival to its answer. The series is looked up once here,
// not on every event.
func LatencyObserver(source string) func(time.Duration) {
	o := eventLatency.WithLabelValues(source)
	return func(d time.Duration) { o.Observe(d.Seconds()) }
}

// forget drops the per-namespace series that sources updated.
func forget(nsID string) {
	denials.DeletePartialMatch(prometheus.Labels{namespaceLabel: nsID})
}

var (
	namespacesDesc = prometheus.NewDesc("imafs_namespaces",
		"Attached containers (imafs namespaces other than the host).", nil, nil)
	entriesDesc = prometheus.NewDesc("imafs_namespace_entries",
		"Entries in the namespace's measurement list (runtime_measurements_count: boot_aggregate and violations included).",
		[]string{namespaceLabel}, nil)
	violationsDesc = prometheus.NewDesc("imafs_namespace_violations_total",
		"Violations recorded in the namespace's measurement list (its violations file).",
		[]string{namespaceLabel}, nil)
	rulesDesc = prometheus.NewDesc("imafs_namespace_policy_rules",
		"Rules of the namespace's active policy.", []string{namespaceLabel}, nil)
	degradedDesc = prometheus.NewDesc("imafs_namespace_degraded",
		"1 while the namespace's list is known incomplete (its journal was found damaged) or its measurements fail (the state directory fails writes), else 0; imafs ps says why.",
		[]string{namespaceLabel}, nil)
	storageFailuresDesc = prometheus.NewDesc("imafs_state_write_failures_total",
		"Journal write batches that failed on a state directory write error (full disk, I/O error); their records were not acknowledged.", nil, nil)
)

// RegistryCollector reads an imans.Registry on every scrape.
type RegistryCollector struct {
	reg *imans.Registry
}

var _ prometheus.Collector = (*RegistryCollector)(nil)

// NewRegistryCollector returns a collector for reg.
func NewRegistryCollector(reg *imans.Registry) *RegistryCollector {
	return &RegistryCollector{reg: reg}
}

// Describe implements prometheus.Collector.
func (c *RegistryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- namespacesDesc
	ch <- entriesDesc
	ch <- violationsDesc
	ch <- rulesDesc
	ch <- degradedDesc
	ch <- storageFailuresDesc
}

// Collect implements prometheus.Collector.
func (c *RegistryCollector) Collect(ch chan<- prometheus.Metric) {
	containers := c.reg.Namespaces()
	ch <- prometheus.MustNewConstMetric(namespacesDesc, prometheus.GaugeValue, float64(len(containers)))
	for _, ns := range append([]*imans.Namespace{c.reg.Host()}, containers...) {
		ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(ns.List.Len()), ns.ID)
		ch <- prometheus.MustNewConstMetric(violationsDesc, prometheus.CounterValue, float64(ns.List.Violations()), ns.ID)
		ch <- prometheus.MustNewConstMetric(rulesDesc, prometheus.GaugeValue, float64(len(ns.Policy())), ns.ID)
		degraded := 0.0
		if c.reg.Degraded(ns) != "" {
			degraded = 1
		}
		ch <- prometheus.MustNewConstMetric(degradedDesc, prometheus.GaugeValue, degraded, ns.ID)
	}
	ch <- prometheus.MustNewConstMetric(storageFailuresDesc, prometheus.CounterValue, float64(c.reg.StorageFailures()))
}

// forgetter deletes a detached namespace's source-updated series.
type forgetter struct{}

var _ imans.Observer = forgetter{}

func (forgetter) Attached(*imans.Namespace)    {}
func (forgetter) Detached(ns *imans.Namespace) { forget(ns.ID) }
