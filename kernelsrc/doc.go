// Package kernelsrc is the imafs daemon's kernel measurement source, for
// kernels carrying the imafs IMA series (kernel-patches/).
//
// Such a kernel tags every file measurement with the label of the registered
// pid namespace it was made in (template "ima-ns" = d-ng|n-ng|ns) and
// measures a file once per namespace. A Source keeps the kernel's
// registrations in step with the daemon's registry (it is an
// imans.Observer: attach writes "PID ID" to the kernel's
// /sys/kernel/security/ima/namespaces, detach writes "-ID"), tails the
// kernel's binary_runtime_measurements and hands every entry, unchanged, to
// the registry: entries tagged with a registered container's ID go to that
// container (and so to the host list too), all others to the host list.
//
// Tailing relies on a property of the kernel's seq_file: reading an open
// binary_runtime_measurements again after end of file continues with the
// entries appended since. The kernel walks its list from the start to the
// reader's position on every read, so the poll interval backs off while the
// list is idle.
package kernelsrc
