#!/bin/sh
# Runs imafs's benchmarks (root needed) and prints the ratios.
# Usage: bench/run.sh [count]   (count: repetitions of each benchmark, default 3)
set -eu
cd "$(dirname "$0")/.."
count=${1:-3}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -count="$count" -run '^$' -bench 'OpenReadClose' -benchtime 3000x ./bench/ | tee "$out"
go test -count="$count" -run '^$' -bench 'BulkCat100k' -benchtime 10x ./bench/ | tee -a "$out"
go test -count=1 -run '^$' -bench 'Containers' -benchtime 3000x ./bench/ | tee -a "$out"
echo
echo "== ratios (median over runs) =="
awk '
function median(name,   n, i, j, t, a) {
	n = cnt[name]; if (n == 0) return 0
	for (i = 1; i <= n; i++) a[i] = v[name, i]
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int((n + 1) / 2)]
}
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	val = $3
	for (i = 4; i <= NF; i++) if ($(i) == "container-ns/op") { val = $(i - 1) }
	for (i = 4; i <= NF; i++) if ($(i) == "heap-B/container") { heap[name] = $(i - 1) }
	cnt[name]++; v[name, cnt[name]] = val
}
END {
	imafs = median("BenchmarkOpenReadClose/imafs_count")
	lx = median("BenchmarkOpenReadClose/lxcfs_uptime")
	st = median("BenchmarkOpenReadClose/kernel_self_stat")
	up = median("BenchmarkOpenReadClose/kernel_uptime")
	printf "open+read+close: imafs count %.1f us, lxcfs /proc/uptime %.1f us, kernel /proc/self/stat %.1f us, kernel /proc/uptime %.1f us\n", imafs/1000, lx/1000, st/1000, up/1000
	if (lx > 0) printf "  imafs / lxcfs = %.2f\n", imafs / lx
	if (st > 0) printf "  imafs / kernel /proc/self/stat = %.1f\n", imafs / st
	bi = median("BenchmarkBulkCat100k/imafs"); bt = median("BenchmarkBulkCat100k/tmpfs")
	if (bt > 0) printf "bulk cat of a 100k-entry list: imafs %.1f ms, tmpfs %.1f ms, imafs / tmpfs = %.2f\n", bi/1e6, bt/1e6, bi / bt
	c1 = median("BenchmarkContainers/attached=1"); c1000 = median("BenchmarkContainers/attached=1000")
	if (c1 > 0) printf "open+read+close in a container: %.1f us with 1 attached, %.1f us with 1000 (ratio %.2f); heap per attached container %.0f KiB\n", c1/1000, c1000/1000, c1000 / c1, heap["BenchmarkContainers/attached=1000"]/1024
}' "$out"
