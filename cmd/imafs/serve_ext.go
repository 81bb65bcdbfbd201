package main

import (
	"flag"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
)

// A serveExtension is an optional part of `imafs serve` — a measurement
// source, the metrics endpoint — kept in a file of its own
// (cmd/imafs/serve_*.go) that registers it from init, so the daemon's core
// never changes when one is added.
type serveExtension struct {
	name string
	// flags registers the extension's flags on serve's flag set.
	flags func(fl *flag.FlagSet)
	// configure, when set, adjusts the registry's options before the
	// registry is made (after the flags are parsed).
	configure func(opts *imans.Options)
	// start runs once the registry exists and before the control socket
	// accepts requests. It returns the function that stops the extension at
	// shutdown (called in reverse order of start), or a nil stop when its
	// flags leave it disabled.
	start func(env serveEnv) (stop func(), err error)
}

// serveEnv is what an extension gets from the daemon.
type serveEnv struct {
	Reg      *imans.Registry
	Log      *logrus.Logger
	StateDir string
	// Restored is closed once the containers of a previous daemon are back
	// in the registry (extensions start before, so that they watch those
	// containers as they come back): a source that attributes a backlog to
	// containers waits for it.
	Restored <-chan struct{}
	// HandingOver reports, when an extension is stopped, whether the daemon
	// hands over to a successor (imafs upgrade) rather than shuts down: a
	// source may then leave what its successor takes over in place. Nil:
	// always a shutdown.
	HandingOver func() bool
}

var serveExtensions []serveExtension

func registerServeExtension(e serveExtension) {
	for _, x := range serveExtensions {
		if x.name == e.name {
			panic("imafs: serve extension registered twice: " + e.name)
		}
	}
	serveExtensions = append(serveExtensions, e)
}

// configureRegistry lets every extension adjust the registry's options.
func configureRegistry(opts *imans.Options) {
	for _, e := range serveExtensions {
		if e.configure != nil {
			e.configure(opts)
		}
	}
}

func addServeExtensionFlags(fl *flag.FlagSet) {
	for _, e := range serveExtensions {
		if e.flags != nil {
			e.flags(fl)
		}
	}
}

// startServeExtensions starts every extension; on a failure it stops those
// already started and returns the error.
func startServeExtensions(env serveEnv) (stops []func(), err error) {
	for _, e := range serveExtensions {
		stop, err := e.start(env)
		if err != nil {
			stopServeExtensions(stops)
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
		if stop != nil {
			env.Log.WithField("extension", e.name).Info("started")
			stops = append(stops, stop)
		}
	}
	return stops, nil
}

func stopServeExtensions(stops []func()) {
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}
