package main

import (
	"context"
	"flag"
	"fmt"
	"net"

	"github.com/imafs/imafs/metrics"
)

// The metrics endpoint: `imafs serve --metrics-addr HOST:PORT` serves
// Prometheus metrics at /metrics (see package metrics).
func init() {
	var addr string
	registerServeExtension(serveExtension{
		name: "metrics",
		flags: func(fl *flag.FlagSet) {
			fl.StringVar(&addr, "metrics-addr", "", "serve Prometheus metrics at HOST:PORT/metrics (e.g. 127.0.0.1:9710; they name every container: keep it node-internal); off when empty")
		},
		start: func(env serveEnv) (func(), error) {
			if addr == "" {
				return nil, nil
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				if err := metrics.ServeListener(ctx, ln, env.Reg, env.Log); err != nil {
					env.Log.WithError(err).Error("metrics endpoint stopped")
				}
			}()
			return func() { cancel(); <-done }, nil
		},
	})
}
