package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/kernelsrc"
	"github.com/imafs/imafs/measurelog"
)

// The kernel measurement source: on a kernel with the imafs IMA series
// (kernel-patches/), `imafs serve` registers every attached container with
// the kernel and sorts the kernel's namespace-tagged measurements into the
// containers' lists; see package kernelsrc.
func init() {
	var mode string
	registerServeExtension(serveExtension{
		name: "kernel-source",
		flags: func(fl *flag.FlagSet) {
			fl.StringVar(&mode, "kernel-source", "auto", "tail the patched kernel's IMA list: auto (when the kernel has the imafs series), on, off")
		},
		// Containers' lists start with the kernel's own boot_aggregate (the
		// one a verifier of the host list sees), else with the host TPM's
		// (--tpm), else zeros.
		configure: func(opts *imans.Options) {
			if mode == "off" || !kernelsrc.Available("") {
				return
			}
			kernel, fallback := kernelsrc.BootAggregate(""), opts.BootAggregate
			opts.BootAggregate = func(algo measurelog.Algo) ([]byte, error) {
				d, err := kernel(algo)
				if err != nil && fallback != nil {
					return fallback(algo)
				}
				return d, err
			}
		},
		start: func(env serveEnv) (func(), error) {
			switch mode {
			case "off":
				return nil, nil
			case "auto":
				if !kernelsrc.Available("") {
					return nil, nil
				}
			case "on":
				if !kernelsrc.Available("") {
					return nil, fmt.Errorf("the kernel has no %s (boot a kernel with kernel-patches/ applied)", kernelsrc.DefaultNamespacesPath)
				}
			default:
				return nil, fmt.Errorf("--kernel-source %q: want auto, on or off", mode)
			}
			src := kernelsrc.New(env.Reg, kernelsrc.Options{
				Log:        env.Log,
				CursorPath: filepath.Join(env.StateDir, "kernel.cursor"),
			})
			env.Reg.AddObserver(src)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				// The kernel's backlog since the cursor belongs partly to
				// containers a previous daemon attached: read it only once
				// they are restored, or their entries would land in the
				// host list alone.
				select {
				case <-env.Restored:
				case <-ctx.Done():
					return
				}
				if err := src.Run(ctx); err != nil {
					env.Log.WithError(err).Error("kernel source stopped")
				}
			}()
			return func() { cancel(); <-done }, nil
		},
	})
}
