package fanotify

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/policy"
)

// A FAN_OPEN_PERM event does not say how the file is being opened, and the
// event's own fd is the daemon's (O_RDONLY), so its fdinfo flags say nothing
// about the caller. The caller is blocked in its open system call while we
// decide, and /proc/TID/syscall shows that call's number and arguments: the
// flags are there (openat2 keeps them in struct open_how, read from
// /proc/TID/mem). FAN_REPORT_TID makes the event's pid the thread's id.

// syscall numbers per architecture.
type openSyscalls struct {
	open, openat, openat2, creat, openByHandleAt, execve, execveat, uselib int64
}

var sysnr = map[string]openSyscalls{
	"amd64": {open: 2, openat: 257, openat2: 437, creat: 85, openByHandleAt: 304, execve: 59, execveat: 322, uselib: 134},
	"arm64": {open: -1, openat: 56, openat2: 437, creat: -1, openByHandleAt: 265, execve: 221, execveat: 281, uselib: -1},
}

// inExec reports whether tid is blocked in execve/execveat: the kernel
// sends an exec's open both as FAN_OPEN_EXEC_PERM and FAN_OPEN_PERM, and
// only the first is an IMA hook (BPRM_CHECK; execve never calls
// ima_file_check).
func inExec(proc string, tid int) bool {
	nr, ok := sysnr[runtime.GOARCH]
	if !ok {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/syscall", proc, tid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(data))
	if len(f) < 7 {
		return false
	}
	num, err := strconv.ParseInt(f[0], 10, 64)
	return err == nil && (num == nr.execve || num == nr.execveat || num == nr.uselib)
}

// openFlags returns the flags of the open tid is blocked in. ok is false
// when the call cannot be identified (e.g. io_uring, a vanished task).
func openFlags(proc string, tid int) (flags uint64, ok bool) {
	nr, ok := sysnr[runtime.GOARCH]
	if !ok {
		return 0, false
	}
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/syscall", proc, tid))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(data))
	if len(f) < 7 {
		return 0, false // "running" or "-1 sp pc" (not in a syscall)
	}
	num, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, false
	}
	arg := func(i int) uint64 {
		v, err := strconv.ParseUint(strings.TrimPrefix(f[1+i], "0x"), 16, 64)
		if err != nil {
			ok = false
		}
		return v
	}
	ok = true
	switch num {
	case nr.open:
		flags = arg(1)
	case nr.openat, nr.openByHandleAt:
		flags = arg(2)
	case nr.creat:
		flags = unix.O_CREAT | unix.O_WRONLY | unix.O_TRUNC
	case nr.openat2:
		how, size := arg(2), arg(3)
		if !ok || size < 8 {
			return 0, false
		}
		var b [8]byte
		mem, err := os.Open(fmt.Sprintf("%s/%d/mem", proc, tid))
		if err != nil {
			return 0, false
		}
		defer mem.Close()
		if _, err := mem.ReadAt(b[:], int64(how)); err != nil {
			return 0, false
		}
		flags = uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
	default:
		return 0, false
	}
	return flags, ok
}

// maskOf converts open flags to the kernel's MAY_* mask of the open, as
// build_open_flags computes acc_mode for ima_file_check: the access mode,
// MAY_WRITE for O_TRUNC, MAY_APPEND for O_APPEND.
func maskOf(flags uint64) policy.Mask {
	var m policy.Mask
	switch flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		m = policy.MayRead
	case unix.O_WRONLY:
		m = policy.MayWrite
	case unix.O_RDWR:
		m = policy.MayRead | policy.MayWrite
	}
	if flags&unix.O_TRUNC != 0 {
		m |= policy.MayWrite
	}
	if flags&unix.O_APPEND != 0 {
		m |= policy.MayAppend
	}
	return m
}
