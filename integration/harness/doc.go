// Package harness starts real containers for imafs's integration tests:
// busybox root filesystems, `unshare` containers (pid + mount namespaces,
// optionally a user namespace mapping root to host uid 100000, optionally
// chroot'ed, optionally nested in another) and real runc containers with OCI
// hooks. Every helper needs root and real tools (unshare, nsenter, runc,
// busybox-static), skips the test cleanly when they are missing, bounds
// every command with a timeout and registers cleanup (by pid) with t.Cleanup.
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
package harness
