package daemon

import (
	"time"

	imafsfs "github.com/imafs/imafs/fs"
	"github.com/imafs/imafs/policy"
)

// SecurityFSTarget is where a container's tree is mounted.
const SecurityFSTarget = "/sys/kernel/security"

// Config is what `imafs serve` was asked to do (its flags, typed).
type Config struct {
	StateDir        string // journals, cursor, vTPM state (made if missing)
	Socket          string // control socket path
	ContainerPolicy string // file with every container's initial policy; "": none
	HostMount       string // also serve the host view here; "": not
	TPM             string // host TPM for boot_aggregate; "": zeros
	VTPM            bool   // one swtpm per container
	VTPMSocketDir   string // "" → StateDir/run
	// PolicyLimits bound every namespace's policy (a load beyond: ENOSPC).
	PolicyLimits policy.Limits
	// PolicyDir holds the operator's policy files that a container's
	// org.imafs.policy-file annotation may name ("": such an annotation
	// fails the attach; org.imafs.policy always applies). See ocipolicy.
	PolicyDir string
	// ListRead is what a container's uid 0 also needs to read its lists
	// and counters (--list-read-cap).
	ListRead imafsfs.ListReadRule

	// TakeoverFD > 0: this daemon is an upgrade's successor; it replaces
	// its predecessor's mounts and reports readiness on this fd.
	TakeoverFD int
	// Args are serve's arguments, for the successor (imafs upgrade).
	Args []string
	// Executable is what an upgrade starts ("": the daemon's own path).
	Executable string

	KernelSource KernelSourceConfig
	Fanotify     FanotifyConfig
	Mmap         MmapConfig
	// MetricsAddr serves Prometheus metrics at HOST:PORT/metrics; "": off.
	MetricsAddr string

	// testSources are started with the measurement sources (tests).
	testSources []Component
}

// KernelSourceConfig configures the kernel source (kernelsrc).
type KernelSourceConfig struct {
	Mode string // auto (when the kernel has the imafs series), on, off
	// ContainerTemplate is how containers' lists render the kernel's
	// ima-nsreg entries: "ima-ng" (or ""; the ns field dropped, readable by
	// Keylime and evmctl) or "ima-nsreg" (unchanged; "ima-ns", its former
	// name, too); see kernelsrc.
	ContainerTemplate string
	// ListPath and NamespacesPath replace the kernel's files (tests).
	ListPath, NamespacesPath string
}

// FanotifyConfig configures the fanotify engine.
type FanotifyConfig struct {
	// Mode: "on"; "auto" (on unless the kernel source runs; a failure to
	// start is logged, not fatal); "off" or "" (the zero Config: off).
	Mode       string
	KeyDir     string        // DIR/<container id>/*.pem etc.
	FailClosed bool          // deny unmeasurable accesses in every container
	Hold       time.Duration // how long a keeper holds events after a crash; 0: no keeper
	KeeperWait time.Duration // wait for a keeper run separately
}

// MmapConfig configures the mmap source (executable mappings, package
// mmapsrc).
type MmapConfig struct {
	// Mode: "on" (a failure to load is fatal); "auto" (on when the
	// fanotify engine runs; a failure to load is a warning); "off" or "".
	Mode string
	// Proc is the procfs mount the source reads ("": /proc; tests).
	Proc string
}
