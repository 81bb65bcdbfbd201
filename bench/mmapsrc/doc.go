// Package mmapsrcbench measures the mmap source's cost (build tag bench;
// bench/run runs it): 20,000 mmap(PROT_READ|PROT_EXEC)+munmap of an
// already reported library by a task in a watched pid namespace, with the
// source's programs attached and detached, rounds interleaved in one run;
// and the same loop by a task outside every watched namespace (the
// filter's cost for the host and unwatched containers).
package mmapsrcbench
