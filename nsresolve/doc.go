// Package nsresolve maps the pid of a FUSE request (or fanotify event) to the
// namespaces and credentials of the calling task, and walks the pid-namespace
// ancestry to find the registered imafs namespace that answers for it.
package nsresolve
