package main

import (
	"flag"
	"fmt"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/metrics"
)

// The fanotify measurement source: `imafs serve --fanotify` measures and
// appraises on fanotify permission events in every attached container
// (stock kernels, no IMA namespaces); see package fanotify.
func init() {
	var enabled, failClosed bool
	var keyDir string
	registerServeExtension(serveExtension{
		name: "fanotify",
		flags: func(fl *flag.FlagSet) {
			fl.BoolVar(&enabled, "fanotify", false, "measure and appraise on fanotify permission events in attached containers (stock kernels)")
			fl.StringVar(&keyDir, "fanotify-keys", "/etc/imafs/keys", "appraisal keys of each container: DIR/<container id>/*.{pem,der,crt,cer,x509,pub}")
			fl.BoolVar(&failClosed, "fanotify-fail-closed", false, "deny accesses that cannot be measured in every container (default: only in containers whose policy appraises)")
		},
		start: func(env serveEnv) (func(), error) {
			if !enabled {
				return nil, nil
			}
			opts := fanotify.Options{Registry: env.Reg, Log: env.Log, KeyDir: keyDir, OnAnswer: func(a fanotify.Answer) {
				metrics.ObserveEventLatency("fanotify", a.Latency)
				if !a.Allow {
					metrics.Denied(a.Namespace, "fanotify", a.Reason)
				}
			}}
			if failClosed {
				opts.FailClosed = func(*imans.Namespace) bool { return true }
			}
			eng, err := fanotify.New(opts)
			if err != nil {
				return nil, fmt.Errorf("start fanotify engine: %w", err)
			}
			unregister := metrics.RegisterSource("fanotify", func() metrics.SourceStats {
				s := eng.Stats()
				return metrics.SourceStats{Events: s.Events, Allowed: s.Allowed, Denied: s.Denied, Measured: s.Measured,
					Errors: s.Errors, Timeouts: s.Timeouts, Overflows: s.Overflows, Wait: s.Latency, Pending: s.Pending}
			})
			return func() { unregister(); eng.Close() }, nil
		},
	})
}
