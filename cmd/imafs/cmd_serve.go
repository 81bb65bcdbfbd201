package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/control"
	"github.com/imafs/imafs/fanotify"
	imafsfs "github.com/imafs/imafs/fs"
	"github.com/imafs/imafs/internal/daemon"
	"github.com/imafs/imafs/ocipolicy"
	"github.com/imafs/imafs/policy"
)

// `imafs serve` runs the daemon (package internal/daemon; its life cycle
// is described in docs/architecture.md): flags → daemon.Config, then the
// signal loop.
func runServe(args []string) int {
	cfg, log, code := serveConfig(args)
	if log == nil {
		return code
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	d, err := daemon.New(cfg, log)
	if err != nil {
		log.WithError(err).Error("start")
		return 1
	}
	return d.Run(sigs)
}

// serveConfig parses serve's flags; a nil logger means exit with code.
func serveConfig(args []string) (daemon.Config, *logrus.Logger, int) {
	var cfg daemon.Config
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	fl.StringVar(&cfg.StateDir, "state-dir", "/var/lib/imafs", "directory for the daemon's state")
	fl.StringVar(&cfg.Socket, "socket", control.DefaultSocket, "control socket path")
	fl.StringVar(&cfg.ContainerPolicy, "container-policy", "", "file with the policy every container starts with (kernel policy language)")
	logLevel := fl.String("log-level", "info", "log level (debug, info, warn, error)")
	logFormat := fl.String("log-format", "text", "log format (text or json)")
	fl.StringVar(&cfg.HostMount, "mount", "", "also serve the tree (host view for host callers) at this host directory")
	fl.StringVar(&cfg.TPM, "tpm", "", "host TPM (/dev/tpmrm0 or a swtpm unixio socket) for boot_aggregate; none: zeros")
	vtpmKind := fl.String("vtpm", "", "per-container virtual TPM: swtpm (one swtpm process per container) or none")
	fl.StringVar(&cfg.VTPMSocketDir, "vtpm-socket-dir", "/run/imafs/vtpm", "directory for the vTPMs' sockets (STATE/run if empty)")
	listReadCap := fl.String("list-read-cap", "none", "capability a container's uid 0 also needs to read its lists and counters: none (the kernel's rule) or sys_admin")
	fl.IntVar(&cfg.TakeoverFD, "takeover-fd", 0, "internal (imafs upgrade): take over from the daemon that started this one and report readiness on this fd")
	cfg.PolicyLimits = policy.DefaultLimits()
	fl.IntVar(&cfg.PolicyLimits.MaxRules, "policy-max-rules", cfg.PolicyLimits.MaxRules, "most rules one namespace's policy may hold (a load beyond: ENOSPC)")
	fl.Int64Var(&cfg.PolicyLimits.MaxBytes, "policy-max-bytes", cfg.PolicyLimits.MaxBytes, "most bytes one namespace's policy text may take; also the largest policy file a \"/path\" load reads (larger: EFBIG)")
	fl.StringVar(&cfg.PolicyDir, "policy-dir", "", "operator's policy files that a container's "+ocipolicy.File+" annotation may name (empty: that annotation fails the attach; "+ocipolicy.Inline+" always applies)")
	sourceFlags(fl, &cfg)
	if err := fl.Parse(args); err != nil {
		return cfg, nil, 2
	}
	if fl.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "imafs serve: unexpected arguments:", fl.Args())
		return cfg, nil, 2
	}
	switch cfg.Mmap.Mode {
	case "auto", "on", "off":
	default:
		fmt.Fprintf(os.Stderr, "imafs serve: --mmap %q: want auto, on or off\n", cfg.Mmap.Mode)
		return cfg, nil, 2
	}
	switch *vtpmKind {
	case "", "none":
	case "swtpm":
		cfg.VTPM = true
	default:
		fmt.Fprintf(os.Stderr, "imafs serve: --vtpm %q: want swtpm or none\n", *vtpmKind)
		return cfg, nil, 2
	}
	listRead, err := imafsfs.ParseListReadCap(*listReadCap)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs serve: --list-read-cap:", err)
		return cfg, nil, 2
	}
	cfg.ListRead = listRead
	log := logrus.New()
	lvl, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs serve:", err)
		return cfg, nil, 2
	}
	log.SetLevel(lvl)
	if *logFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	}
	cfg.Args = withoutFlag(args, "takeover-fd")
	return cfg, log, 0
}

// sourceFlags are the flags of the measurement sources and the metrics
// endpoint.
func sourceFlags(fl *flag.FlagSet, cfg *daemon.Config) {
	fl.StringVar(&cfg.KernelSource.Mode, "kernel-source", "auto", "tail the patched kernel's IMA list: auto (when the kernel has the imafs series), on, off")
	fl.StringVar(&cfg.KernelSource.ContainerTemplate, "kernel-container-template", "ima-ng", "how containers' lists show the kernel source's ima-nsreg entries: ima-ng (the ns field dropped: ima-ng, or ima-sig etc. as the other fields make; Keylime and evmctl read them; the host list keeps ima-nsreg) or ima-nsreg (unchanged; ima-ns, its former name, is accepted too)")
	f := &cfg.Fanotify
	f.Mode = "auto"
	fl.Var((*autoBool)(&f.Mode), "fanotify", "measure and appraise on fanotify permission events in attached containers (stock kernels): auto (unless the kernel source runs), true (bare --fanotify), false")
	fl.StringVar(&cfg.Mmap.Mode, "mmap", "auto", "measure files mapped executable (MMAP_CHECK) in attached containers with BPF: auto (when the fanotify engine runs and the BPF programs load), on (a failure is fatal), off")
	fl.StringVar(&f.KeyDir, "fanotify-keys", "/etc/imafs/keys", "appraisal keys of each container: DIR/<container id>/*.{pem,der,crt,cer,x509,pub}")
	fl.BoolVar(&f.FailClosed, "fanotify-fail-closed", false, "deny accesses that cannot be measured in every container (default: only in containers whose policy appraises)")
	fl.DurationVar(&f.Hold, "fanotify-hold", 30*time.Second, "after a crash, containers' execs and opens wait this long for a restarted daemon before they are allowed unmeasured (a keeper process holds the fanotify groups); 0: no keeper, allowed at once")
	fl.DurationVar(&f.KeeperWait, "fanotify-keeper-wait", 0, "wait this long for a keeper run separately (a systemd unit, a Kubernetes sidecar) to answer on STATE_DIR/"+fanotify.KeeperSocket+" before starting one")
	fl.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics at HOST:PORT/metrics (e.g. 127.0.0.1:9710; they name every container: keep it node-internal); off when empty")
}

// autoBool is a flag that is auto, on or off: bare (--fanotify) or a
// true value means on, a false value off (flag.Value with IsBoolFlag).
type autoBool string

func (a *autoBool) String() string { return string(*a) }

func (a *autoBool) IsBoolFlag() bool { return true }

func (a *autoBool) Set(v string) error {
	switch strings.ToLower(v) {
	case "auto":
		*a = "auto"
	case "1", "t", "true", "on", "yes":
		*a = "on"
	case "0", "f", "false", "off", "no":
		*a = "off"
	default:
		return fmt.Errorf("%q: want auto, true or false", v)
	}
	return nil
}

// withoutFlag returns args without the flag name (-name/--name, with its
// value as =V or as the next argument).
func withoutFlag(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		if a == name {
			i++
			continue
		}
		if strings.HasPrefix(a, name+"=") && strings.HasPrefix(args[i], "-") {
			continue
		}
		out = append(out, args[i])
	}
	return out
}
