// Package harness starts real containers for imafs's integration tests:
// busybox root filesystems, `unshare` containers (pid + mount namespaces,
// optionally a user namespace mapping root to host uid 100000, optionally
// chroot'ed, optionally nested in another) and real runc containers with OCI
// hooks. Every helper needs root and real tools (unshare, nsenter, runc,
// busybox-static), skips the test cleanly when they are missing, bounds
// every command with a timeout and registers cleanup (by pid) with t.Cleanup.
// The unit tests of other packages use it too; only _test.go files import it.
//
//	root := harness.TempDir(t)            // 0755: reachable by host uid 100000
//	harness.BusyboxRootfs(t, root)        // busybox-static, /etc/passwd with uid 1000
//	u := harness.StartUnshare(t, harness.UnshareOptions{Root: root, User: true, Hostname: "c1"})
//	out, err := u.Exec(0, "cat", "/sys/kernel/security/ima/policy")  // nsenter -t PID -a -r -w -S 0 -G 0
//	pid := u.Spawn(t, 1000, "sleep", "600")                          // host pid of a process inside
//	n := u.Nested(t, harness.UnshareOptions{})                        // child pid ns of u's
//	s := harness.StartSleeper(t)          // bare: sleep as pid 1 of a new pid ns, the test's mounts; s.Pid, s.Stop()
//	var logs harness.SyncBuffer           // a command's Stdout that the test may read while it runs
//	c := harness.NewRuncContainer(t, harness.RuncOptions{User: true,
//		Capabilities: []string{"CAP_SYS_ADMIN"},
//		Hooks: map[string][]harness.Hook{"createRuntime": {{Path: bin, Args: []string{"imafs", "oci-hook"}}}}})
//	out, err = c.Exec(harness.NonRootUID, "id", "-u")                // runc exec --user 1000:1000
//	c.Delete()                                                        // runc delete --force: poststop hooks run
//
// Pitfalls it encodes:
//   - An init process in a pid namespace ignores SIGTERM/SIGINT unless it
//     installed a handler: containers are stopped with SIGKILL.
//   - util-linux 2.38's --map-users needs newuidmap (not installed here), so a
//     user-namespaced unshare container is built by hand: a holder process
//     creates the user namespace, the harness writes its uid_map/gid_map
//     (0 → 100000, 65536 ids), and the container joins it with
//     `nsenter --user -S 0 -G 0` before unsharing pid and mount namespaces.
//   - `runc run -d` with "terminal": false hands its stdio to the container:
//     never give it pipes (Wait would block until the container exits); the
//     harness passes files.
//   - runc's default spec grants no CAP_SYS_ADMIN to container root (only
//     AUDIT_WRITE, KILL, NET_BIND_SERVICE); RuncOptions.Capabilities adds more.
//   - busybox's unshare (used for containers nested in a busybox rootfs)
//     makes "/" private with mount("none", "/") before --mount-proc, which
//     fails when "/" is a chroot directory and not a mount: a chroot'ed
//     container bind-mounts its root onto itself first, and nested
//     containers mount /proc themselves. busybox's "--propagation unchanged"
//     fails the same way; the default (private) is used.
//   - t.TempDir()'s parents are mode 0700: a user-namespaced container's
//     root can't reach a rootfs there (TempDir makes a reachable one;
//     StartUnshare checks and says so).
//   - A user namespace's root can mount sysfs only if it also owns the
//     network namespace: UnshareOptions.Net.
//   - Every process is signalled through a pidfd opened while it was known
//     to be ours, never by a bare pid.
package harness
