// Package bench holds imafs's benchmarks (go test -bench), kept out of the
// default test run (its one test is a helper that skips unless the
// container benchmark runs it). Run them with bench/run (make bench), which
// prints the ratios asked for in the project's issues:
//
//   - bulk read of a 100,000-entry ascii list through imafs vs the same
//     bytes on tmpfs (`cat`, a fresh process per read);
//   - open+read+close of runtime_measurements_count vs LXCFS's /proc/uptime
//     (a private lxcfs on a temp dir) and the kernel's /proc/self/stat;
//   - the same open+read+close from inside a container with 1 and with 1,000
//     containers attached: in-process (registry heap per container) and
//     through the real daemon with one FUSE mount per container (daemon RSS
//     per container, spawn+attach time);
//   - a quiet container's small read idle and while another container
//     floods its 3.3 MB list with 16 readers, with and without the
//     per-namespace read bound (fs.Fairness).
//
// Everything needs root (FUSE mounts, namespaces).
package bench
