// Package metrics exposes the imafs daemon's state and activity as
// Prometheus metrics on an opt-in listen address (`imafs serve
// --metrics-addr`).
//
// Two kinds of figures:
//
//   - Read on every scrape from the imans.Registry (a prometheus.Collector,
//     nothing to keep in step): per namespace (label "namespace": the
//     container ID, or "host") the entries of its measurement list
//     (runtime_measurements_count), its violations and the number of rules
//     in its policy, and the number of attached containers.
//   - Updated by the measurement sources through small functions of this
//     package (safe for concurrent use, cheap, usable without a running
//     server): Denied for an access a source refused (appraisal FAN_DENY, a
//     fail-closed timeout, ...), LatencyObserver for the time from an
//     event's arrival to its answer. A source that keeps its own totals
//     (events, answers, backlog) registers a function with RegisterSource,
//     read on every scrape. `imafs serve --fanotify` feeds all of them from
//     the fanotify engine (fanotify.Options.OnAnswer and Engine.Stats).
//
// Metric names (all prefixed imafs_):
//
//	imafs_namespaces                         gauge    attached containers (the host not counted)
//	imafs_namespace_entries{namespace}       gauge    entries in the namespace's list, boot_aggregate and violations included
//	imafs_namespace_violations_total{namespace} counter violations recorded in the namespace's list
//	imafs_namespace_policy_rules{namespace}  gauge    rules of the namespace's active policy
//	imafs_denials_total{namespace,source,reason} counter accesses denied by a source
//	imafs_event_latency_seconds{source}      histogram event arrival → answer
//	imafs_queue_depth{source}                gauge    \ events received, not yet answered
//	imafs_source_events_total{source}        counter  |
//	imafs_source_answers_total{source,answer} counter  |
//	imafs_source_measured_total{source}      counter  | from RegisterSource
//	imafs_source_failures_total{source,kind} counter  |
//	imafs_source_wait_seconds_total{source}  counter  /
//
// A namespace's series disappear when it is detached: the registry-backed
// ones because the collector no longer sees it, the denial counters because
// Serve registers an imans.Observer that deletes them.
package metrics
