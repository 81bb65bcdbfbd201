package main

import (
	"flag"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/policy"
)

// Policy limits: `imafs serve --policy-max-rules N --policy-max-bytes N`
// bound every namespace's policy (imans.Options.PolicyLimits); a load that
// would exceed them fails with ENOSPC and changes nothing.
func init() {
	limits := policy.DefaultLimits()
	registerServeExtension(serveExtension{
		name: "policy-limits",
		flags: func(fl *flag.FlagSet) {
			fl.IntVar(&limits.MaxRules, "policy-max-rules", limits.MaxRules, "most rules one namespace's policy may hold (a load beyond: ENOSPC)")
			fl.Int64Var(&limits.MaxBytes, "policy-max-bytes", limits.MaxBytes, "most bytes one namespace's policy text may take; also the largest policy file a \"/path\" load reads (larger: EFBIG)")
		},
		configure: func(opts *imans.Options) { opts.PolicyLimits = limits },
		start:     func(serveEnv) (func(), error) { return nil, nil },
	})
}
