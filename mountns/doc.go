// Package mountns mounts a FUSE connection inside another process's mount
// namespace (no bind mount), and serves it with go-fuse.
package mountns
