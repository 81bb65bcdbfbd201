// Package control is the imafs daemon's control protocol: JSON lines over a
// unix socket (mode 0600, root only, checked again with SO_PEERCRED).
//
// A client sends one Request line and reads one Response line. When the
// response says Stream, raw bytes follow until the daemon closes the
// connection (`imafs log`, `imafs log -f`).
package control
