package main

import (
	"flag"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/ocipolicy"
	"github.com/imafs/imafs/policy"
)

// Policy from the orchestrator: a container's OCI annotations
// org.imafs.policy (rules inline) or org.imafs.policy-file (a name in
// `imafs serve --policy-dir DIR`) set its starting policy at attach (see
// package ocipolicy).
func init() {
	var dir string
	registerServeExtension(serveExtension{
		name: "policy-annotations",
		flags: func(fl *flag.FlagSet) {
			fl.StringVar(&dir, "policy-dir", "", "operator's policy files that a container's "+ocipolicy.File+" annotation may name (empty: that annotation fails the attach; "+ocipolicy.Inline+" always applies)")
		},
		configure: func(opts *imans.Options) {
			// The limits are read at attach: another extension's
			// configure (policy-limits) may set them after this one.
			opts.StartPolicy = func(_ string, config []byte) (policy.Policy, error) {
				rules, _, err := ocipolicy.Reader{Dir: dir, Limits: opts.PolicyLimits}.Policy(config)
				return rules, err
			}
		},
		start: func(serveEnv) (func(), error) { return nil, nil },
	})
}
