package fsync

import (
	"fmt"
	"os"
)

// Dir fsyncs directory dir, making the entries created, renamed or
// removed in it durable.
func Dir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
