// Package fanotifybench measures the cost of the fanotify engine against the
// same work with imafs not watching. It only builds with the "bench" tag and
// runs as root; run it with ../fanotify.sh (one run, figures and ratios on
// stdout).
package fanotifybench
