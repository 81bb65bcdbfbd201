package kernelsrc

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/imafs/imafs/measurelog"
)

// BootAggregate returns a function for imans.Options.BootAggregate that
// reads the kernel's own boot_aggregate (the first entry of the list at
// listPath, DefaultListPath if empty), so containers' lists start with the
// same boot_aggregate as the kernel's. It fails when the kernel computed it
// in another algorithm than the one asked for; the registry then falls back
// to zeros.
func BootAggregate(listPath string) func(algo measurelog.Algo) ([]byte, error) {
	if listPath == "" {
		listPath = DefaultListPath
	}
	return func(algo measurelog.Algo) ([]byte, error) {
		f, err := os.Open(listPath)
		if err != nil {
			return nil, fmt.Errorf("kernel boot_aggregate: %w", err)
		}
		defer f.Close()
		return firstBootAggregate(f, algo)
	}
}

func firstBootAggregate(r io.Reader, algo measurelog.Algo) ([]byte, error) {
	e, err := measurelog.NewDecoder(r, measurelog.SHA1).Next()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("kernel boot_aggregate: empty list")
	}
	if err != nil {
		return nil, fmt.Errorf("kernel boot_aggregate: %w", err)
	}
	if e.Name() != "boot_aggregate" {
		return nil, fmt.Errorf("kernel boot_aggregate: first entry is %q", e.Name())
	}
	name, digest, err := e.FileDigest()
	if err != nil {
		return nil, fmt.Errorf("kernel boot_aggregate: %w", err)
	}
	if name != algo.String() {
		return nil, fmt.Errorf("kernel boot_aggregate: kernel used %s, %s wanted", name, algo)
	}
	return digest, nil
}
