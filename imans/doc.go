// Package imans is the registry of imafs namespaces and the one measurement
// pipeline every measurement source feeds.
//
// An imafs namespace belongs to a registered container: Attach pins the
// container's namespaces (pid, user, mount, cgroup) through its init process
// and starts a measurement list the way a kernel starts one (boot_aggregate,
// then an ima-buf entry over the container's OCI config). The host is a
// namespace too; it sees every entry of every container.
//
// ForCaller maps a resolved caller to the namespace that answers for it: the
// registered container owning the caller's pid namespace or its nearest
// registered ancestor, else the host. Record is the single sink: it appends an
// entry to its namespace's list and to the host's list (and, once a journal is
// configured, to the Store before it returns).
//
// A container whose init exits is detached by itself: the registry watches
// every pinned init's pidfd with one epoll loop.
package imans
