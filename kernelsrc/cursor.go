package kernelsrc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// DefaultBootIDPath names the current boot; the kernel list starts anew with
// every boot, so a cursor of another boot is worthless.
const DefaultBootIDPath = "/proc/sys/kernel/random/boot_id"

// cursor remembers, across daemon restarts, how many entries of this boot's
// kernel list the registry already holds, so a restarted daemon neither
// records an entry twice (violations would count twice) nor loses one.
//
// It is rewritten in place after every recorded entry, without fsync: the
// entries themselves are durable in the registry's journals before the
// cursor moves, and a daemon crash leaves the page cache, so only a crash of
// the whole machine loses an update — and that starts a new boot and a new
// kernel list anyway.
type cursor struct {
	f      *os.File
	bootID string
}

// openCursor opens (creating) the cursor file at path and returns it with
// the number of entries already consumed in this boot (0 for a new boot or a
// new file).
func openCursor(path, bootIDPath string) (*cursor, uint64, error) {
	id, err := os.ReadFile(bootIDPath)
	if err != nil {
		return nil, 0, fmt.Errorf("kernel source: boot id: %w", err)
	}
	c := &cursor{bootID: strings.TrimSpace(string(id))}
	c.f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("kernel source: cursor: %w", err)
	}
	buf := make([]byte, 128)
	n, _ := c.f.ReadAt(buf, 0)
	fields := strings.Fields(string(bytes.TrimRight(buf[:n], "\x00")))
	if len(fields) != 2 || fields[0] != c.bootID {
		return c, 0, nil
	}
	consumed, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		return c, 0, nil
	}
	return c, consumed, nil
}

// store records that the first consumed entries are in the registry. The
// record has a fixed width so an in-place rewrite never leaves a longer
// old tail behind.
func (c *cursor) store(consumed uint64) error {
	rec := fmt.Sprintf("%s %020d\n", c.bootID, consumed)
	if _, err := c.f.WriteAt([]byte(rec), 0); err != nil {
		return fmt.Errorf("kernel source: store cursor: %w", err)
	}
	return nil
}

func (c *cursor) Close() error { return c.f.Close() }
