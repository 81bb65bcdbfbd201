// Command treeop tries one change of a file tree and prints the outcome
// ("ok" or the errno's name, e.g. "EPERM"); it always exits 0 once the
// operation ran. The integration tests copy it (built static) into
// containers to attack imafs's tree as root and non-root:
//
//	treeop unlink /sys/kernel/security/ima/policy
//	treeop rename /sys/kernel/security/ima/policy /sys/kernel/security/ima/x
package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ops take one or two paths.
var ops = map[string]func(a, b string) error{
	"unlink":      func(a, _ string) error { return unix.Unlink(a) },
	"rmdir":       func(a, _ string) error { return unix.Rmdir(a) },
	"rename":      func(a, b string) error { return unix.Rename(a, b) },
	"link":        func(a, b string) error { return unix.Link(a, b) },
	"symlink":     func(a, b string) error { return unix.Symlink(a, b) },
	"mkdir":       func(a, _ string) error { return unix.Mkdir(a, 0o755) },
	"mknod-fifo":  func(a, _ string) error { return unix.Mknod(a, unix.S_IFIFO|0o600, 0) },
	"mknod-reg":   func(a, _ string) error { return unix.Mknod(a, unix.S_IFREG|0o600, 0) },
	"create":      create,
	"setxattr":    func(a, _ string) error { return unix.Setxattr(a, "user.attack", []byte("1"), 0) },
	"removexattr": func(a, _ string) error { return unix.Removexattr(a, "user.attack") },
	"truncate":    func(a, _ string) error { return unix.Truncate(a, 0) },
	"chmod":       func(a, _ string) error { return unix.Chmod(a, 0o666) },
	"chown":       func(a, _ string) error { return unix.Chown(a, 1000, 1000) },
}

func create(a, _ string) error {
	fd, err := unix.Open(a, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: treeop OP PATH [PATH2]")
		os.Exit(2)
	}
	op, ok := ops[os.Args[1]]
	if !ok {
		fmt.Fprintln(os.Stderr, "treeop: unknown op", os.Args[1])
		os.Exit(2)
	}
	second := ""
	if len(os.Args) > 3 {
		second = os.Args[3]
	}
	err := op(os.Args[2], second)
	var errno syscall.Errno
	switch {
	case err == nil:
		fmt.Println("ok")
	case errors.As(err, &errno):
		fmt.Println(unix.ErrnoName(errno))
	default:
		fmt.Fprintln(os.Stderr, "treeop:", err)
		os.Exit(1)
	}
}
