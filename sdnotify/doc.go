// Package sdnotify speaks the service manager's notification protocol
// (sd_notify(3)) without libsystemd: newline-separated KEY=VALUE lines in
// one datagram to the unix socket named by $NOTIFY_SOCKET, an abstract
// socket when the name starts with '@'.
//
// The manager learns who sent a message from the kernel (SCM_CREDENTIALS
// on its socket), so a message is always about the process that sends it,
// unless it says MAINPID=. Without $NOTIFY_SOCKET (not started by a service
// manager, or Type= other than notify) every call is a no-op.
//
// imafs serve uses it for readiness (READY=1), shutdown (STOPPING=1), a
// one-line STATUS=, and for `imafs upgrade`: the successor names itself the
// service's main process (MAINPID=) and waits on a BARRIER=1 until the
// manager has read that, before the old process may exit.
package sdnotify
