package mmapsrc_test

import (
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/imafs/imafs/mmapsrc"
)

// The daemon's use: watch each container's pid namespace, hash what is
// reported, and turn what could not be measured into violations.
func ExampleSource() {
	src, err := mmapsrc.Open(mmapsrc.Options{})
	if err != nil {
		fmt.Println("no mmap source on this kernel:", err) // say so, never silently
		return
	}
	defer src.Close()
	const containerPidNS = 4026532290 // the container's /proc/PID/ns/pid inode
	unwatch, err := src.Watch(containerPidNS)
	if err != nil {
		return
	}
	defer unwatch()
	for ev := range src.Events() {
		switch {
		case ev.Kind == mmapsrc.Lost:
			fmt.Printf("violation: %d executable mappings in mount ns %d not measured\n", ev.Count, ev.MntNS)
		case ev.Err != nil:
			fmt.Printf("violation: pid %d mapped %d:%d, not measured: %v\n", ev.Pid, ev.Dev, ev.Ino, ev.Err)
		default:
			h := sha256.New()
			_, err := io.Copy(h, ev.File)
			ev.File.Close()
			if err != nil {
				fmt.Printf("violation: %s: %v\n", ev.Path, err)
				continue
			}
			// MMAP_CHECK (Mprotect: also MMAP_CHECK_REQPROT), mask MAY_EXEC
			fmt.Printf("%v %x %s changed=%v\n", ev.Kind, h.Sum(nil), ev.Path, ev.Changed)
			// Forget(ev.Dev, ev.Ino, ev.MntNS) measures the file again at its next mapping.
		}
	}
}
