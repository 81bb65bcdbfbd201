package measurelog

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/imafs/imafs/internal/fsync"
)

// A seal lets a journal's next replay trust what this daemon wrote and
// checked: SealJournal (at a clean shutdown or a handover) writes
// path+".seal" holding the journal's length then and the CRC-32C of
// those bytes. A replay whose journal still starts with exactly those
// bytes (the CRC computed again over the mapping: hardware CRC, a few ms
// for 100 MB) skips the template digest check of the records within them;
// their structure is still parsed and checked, and every record past the
// sealed prefix (appended since, torn, damaged) is checked as always. A
// changed byte in the prefix fails the CRC: the whole journal is checked,
// damage found and quarantined as without a seal. A missing, unreadable
// or stale seal only costs the checks. The journal is append-only and
// only cut back past its durable length, so a prefix once sealed stays.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func sealPath(path string) string { return path + ".seal" }

// SealJournal seals the first size bytes of the journal at path (read
// back from the file: the seal covers what is on disk).
func SealJournal(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("seal journal: %w", err)
	}
	defer f.Close()
	h := crc32.New(castagnoli)
	if n, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil || n != size {
		return fmt.Errorf("seal journal %s: read %d of %d bytes: %v", path, n, size, err)
	}
	seal := fmt.Sprintf("imafs-journal-seal %d %08x\n", size, h.Sum32())
	if err := fsync.WriteFile(sealPath(path)+".tmp", []byte(seal)); err != nil {
		return fmt.Errorf("seal journal %s: %w", path, err)
	}
	if err := os.Rename(sealPath(path)+".tmp", sealPath(path)); err != nil {
		return fmt.Errorf("seal journal %s: %w", path, err)
	}
	return nil
}

// sealedPrefix returns how many leading bytes of data (the journal at
// path) its seal vouches for: 0 without a seal that matches.
func sealedPrefix(path string, data []byte) int {
	b, err := os.ReadFile(sealPath(path))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(bytes.TrimSpace(b)))
	if len(f) != 3 || f[0] != "imafs-journal-seal" {
		return 0
	}
	size, err1 := strconv.ParseInt(f[1], 10, 64)
	crc, err2 := strconv.ParseUint(f[2], 16, 32)
	if err1 != nil || err2 != nil || size <= 0 || size > int64(len(data)) {
		return 0
	}
	if crc32.Checksum(data[:size], castagnoli) != uint32(crc) {
		return 0
	}
	return int(size)
}
