#!/bin/sh
# One run of the fanotify engine benchmark (root, amd64): 2,000 execs of a
# small static binary in a measured container vs imafs not watching (already
# measured and first-time cases), and the first measurement of a 1 GiB file
# vs `openssl dgst -sha256`. Not part of the default test run (build tag).
set -e
cd "$(dirname "$0")/.."
exec go test -tags bench -count=1 -timeout 600s -run TestFanotifyBench -v ./bench/fanotify/ "$@"
