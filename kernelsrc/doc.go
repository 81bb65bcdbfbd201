// Package kernelsrc is the imafs daemon's kernel measurement source, for
// kernels carrying the imafs IMA series (kernel-patches/).
//
// Such a kernel tags every file measurement made in a registered pid
// namespace with "label:id" of its registration (template "ima-nsreg" =
// d-ng|n-ng|ns, "ima-ns" in the v1 series; the id is never reused until
// reboot) and measures a file
// once per registration. A Source keeps the kernel's registrations in step
// with the daemon's registry (it is an imans.Observer: attach writes
// "FD ID" to the kernel's /sys/kernel/security/ima/namespaces, FD being the
// container's pinned pid namespace fd, detach writes "-ID"), tails the
// kernel's binary_runtime_measurements and hands every entry to the
// registry: unchanged for the host list, and for a container's list without
// its ns field (ContainerView: ima-nsreg becomes ima-ng, so Keylime reads it;
// VerifyBinding checks a container's list against the host's, see
// docs/keylime.md). The kernel measures each registration ("ima_ns_register",
// an ima-buf record of "label:id pid:[inode]") before any entry can carry
// its id; the Source learns from these records which tags belong to which
// attached container (the label is its ID and the inode its pid
// namespace's), so entries go to that container (and to the host list
// too), and all others, the records included, to the host list alone. A
// label reused by another namespace, or a registration some other writer
// made under a container's ID, is not the container's. Bare labels (the v1
// series) are still attributed by label.
//
// Tailing relies on a property of the kernel's seq_file: reading an open
// binary_runtime_measurements again after end of file continues with the
// entries appended since. The kernel walks its list from the start to the
// reader's position on every read, so the poll interval backs off while the
// list is idle.
package kernelsrc
