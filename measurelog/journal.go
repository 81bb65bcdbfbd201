package measurelog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/internal/fsync"
)

// Journal is an append-only file of binary-list records (the sha1 bank's
// binary format, template data intact) that makes a list durable. Append
// returns once its record is on disk; concurrent appenders share fsyncs
// (group commit).
type Journal struct {
	path string
	f    *os.File
	log  logrus.FieldLogger

	mu         sync.Mutex
	cond       *sync.Cond
	pending    []byte // records not yet written
	spare      []byte
	nextSeq    uint64 // sequence number of the last record appended
	durableSeq uint64 // every record up to this one is on disk
	flushing   bool
	syncs      int // fsyncs done, for tests of group commit
	closed     bool
	failedSeq  uint64 // every record up to this one not durable yet failed
	lastErr    error
	size       int64 // bytes of whole, durable records: the file's length after a good flush
	broken     error // a failed write could not be cut back to size; retried on the next flush
}

// ErrJournalClosed is returned by Append after Close.
var ErrJournalClosed = errors.New("journal closed")

// OpenJournal opens the journal at path, creating it when missing, and
// returns the entries it holds. A torn tail (the file ends inside its last
// record and nothing valid follows: a write cut short by a crash, never
// acknowledged) is cut off and logged; that is not an error. Any other
// damage (a corrupt record or length field, a bad digest) is quarantined:
// the original file is kept byte for byte as path+".corrupt-<unix
// nanoseconds>" (a hard link, so a full disk does not prevent it), the
// journal is replaced by its valid prefix, and OpenJournal returns the
// journal, the prefix's entries and a *DamageError (which wraps the
// *DecodeError); callers decide what the loss means.
func OpenJournal(path string) (*Journal, []*Entry, error) {
	return OpenJournalLogger(path, logrus.StandardLogger())
}

// DamageError reports a journal that was damaged other than by a torn
// tail, and where its original bytes were kept.
type DamageError struct {
	Path    string // the journal
	Saved   string // the original file, byte for byte
	Size    int64  // its size
	Kept    int    // entries of the valid prefix restored
	Decode  *DecodeError
	Missing bool // (for callers) the journal was missing or empty where it must not be
}

func (e *DamageError) Error() string {
	return fmt.Sprintf("journal %s damaged at offset %d (%s): %d entries kept, original saved as %s", e.Path, e.Decode.Offset, e.Decode.Reason, e.Kept, e.Saved)
}

func (e *DamageError) Unwrap() error { return e.Decode }

// OpenJournalLogger is OpenJournal logging through log.
func OpenJournalLogger(path string, log logrus.FieldLogger) (*Journal, []*Entry, error) {
	var entries []*Entry
	j, err := openJournal(path, log, false, func(data []byte) (int, error) {
		// The entries' fields are slices of data (which nothing else
		// holds): no copy of every record, and data goes with the last entry.
		var derr error
		entries, derr = decodeBinary(data, SHA1, true)
		return len(entries), derr
	}, nil)
	if j == nil {
		return nil, nil, err
	}
	return j, entries, err
}

// ReplayJournal opens the journal at path as OpenJournalLogger does (the
// same checks of every record, the same repair of a torn tail and
// quarantine of damage, the same *DamageError) and appends its entries to
// l, an empty journal-backed list, which then reads its records from the
// journal (the repaired file, opened for reading). The file is mapped
// while it is replayed, not copied: no entry is kept in memory. Every
// progressEvery records (0: never) it logs its progress. The template
// digests of a sealed prefix (SealJournal) are not checked again.
func ReplayJournal(path string, log logrus.FieldLogger, l *List, progressEvery int) (*Journal, error) {
	if !l.IsJournalBacked() || l.Len() != 0 {
		return nil, fmt.Errorf("replay journal %s: the list must be empty and journal-backed", path)
	}
	return openJournal(path, log, true, func(data []byte) (int, error) {
		l.SetJournal(bytes.NewReader(data))
		return l.replay(data, sealedPrefix(path, data), func(records, off int) {
			if progressEvery > 0 && records%progressEvery == 0 {
				log.WithFields(logrus.Fields{"replayed": records, "offset": off, "size": len(data)}).Info("journal replay progress")
			}
		})
	}, func() error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		l.SetJournal(f)
		return nil
	})
}

// openJournal is OpenJournalLogger with decode taking the journal's bytes
// (read, or mapped when mapped is set) and returning how many records it
// kept and the *DecodeError where it stopped; after (when not nil) runs
// once the journal is repaired, before a mapping ends.
func openJournal(path string, log logrus.FieldLogger, mapped bool, decode func(data []byte) (int, error), after func() error) (*Journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if err := fsync.Dir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	var data []byte
	if mapped {
		var unmap func()
		data, unmap, err = mapJournal(f)
		if err == nil {
			defer unmap()
		}
	} else {
		data, err = readJournal(f)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read journal %s: %w", path, err)
	}
	kept, derr := decode(data)
	var retErr error
	if derr != nil {
		var de *DecodeError
		if !errors.As(derr, &de) {
			f.Close()
			return nil, fmt.Errorf("replay journal %s: %w", path, derr)
		}
		fields := logrus.Fields{"journal": path, "offset": de.Offset, "size": len(data), "entries": kept, "reason": de.Reason}
		if de.Torn {
			log.WithFields(fields).Warn("journal: torn tail cut")
			err = cutTail(f, path, de.Offset)
		} else {
			f.Close()
			var saved string
			saved, err = Quarantine(path, data[:de.Offset])
			if err == nil {
				f, err = os.OpenFile(path, os.O_RDWR, 0o600)
			}
			fields["saved"] = saved
			log.WithFields(fields).Error("journal: damaged; original kept, valid prefix restored")
			retErr = &DamageError{Path: path, Saved: saved, Size: int64(len(data)), Kept: kept, Decode: de}
		}
		if err != nil {
			if f != nil {
				f.Close()
			}
			return nil, fmt.Errorf("repair journal %s: %w", path, err)
		}
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek journal %s: %w", path, err)
	}
	if after != nil {
		if err := after(); err != nil {
			f.Close()
			return nil, fmt.Errorf("open journal %s: %w", path, err)
		}
	}
	size := int64(len(data))
	if retErr != nil {
		size = retErr.(*DamageError).Decode.Offset
	} else if derr != nil {
		size = derr.(*DecodeError).Offset
	}
	j := &Journal{path: path, f: f, log: log, size: size}
	j.cond = sync.NewCond(&j.mu)
	return j, retErr
}

// mapJournal maps f read-only (nil for an empty file) and returns the
// function that unmaps it. The pages are the page cache's: replaying a
// journal copies none of it into the daemon's memory.
func mapJournal(f *os.File) ([]byte, func(), error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if fi.Size() == 0 {
		return nil, func() {}, nil
	}
	if int64(int(fi.Size())) != fi.Size() {
		return nil, nil, fmt.Errorf("journal of %d bytes cannot be mapped", fi.Size())
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map: %w", err)
	}
	_ = unix.Madvise(data, unix.MADV_SEQUENTIAL)
	return data, func() { _ = unix.Munmap(data) }, nil
}

// readJournal reads f from its start into a buffer of its size (one
// allocation, not io.ReadAll's doublings: a journal can hold hundreds of
// MB), and whatever a concurrent writer added since.
func readJournal(f *os.File) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	data := make([]byte, fi.Size(), fi.Size()+512)
	n, err := io.ReadFull(f, data)
	data = data[:n]
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return data, nil // shorter than its size a moment ago
	}
	if err != nil {
		return nil, err
	}
	rest, err := io.ReadAll(f)
	return append(data, rest...), err
}

// cutTail truncates a torn tail off and makes that durable.
func cutTail(f *os.File, path string, at int64) error {
	if err := f.Truncate(at); err != nil {
		return fmt.Errorf("cut journal %s at %d: %w", path, at, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync journal %s: %w", path, err)
	}
	return nil
}

// Quarantine keeps the file at path byte for byte as
// path+".corrupt-<unix nanoseconds>" and replaces path with keep, durably.
// The original is kept by a hard link (no data copied, so it works on a
// full disk) before the replacement is renamed over it: a crash at any
// point leaves either the original at path or both files. A missing path
// is not an error (there is nothing to keep; saved is ""), path is then
// created with keep.
func Quarantine(path string, keep []byte) (saved string, err error) {
	tmp := path + ".repair"
	if err := fsync.WriteFile(tmp, keep); err != nil {
		return "", fmt.Errorf("quarantine %s: %w", path, err)
	}
	saved = fmt.Sprintf("%s.corrupt-%d", path, time.Now().UnixNano())
	if err := os.Link(path, saved); errors.Is(err, os.ErrNotExist) {
		saved = ""
	} else if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("quarantine %s: keep original: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return saved, fmt.Errorf("quarantine %s: %w", path, err)
	}
	if err := fsync.Dir(filepath.Dir(path)); err != nil {
		return saved, fmt.Errorf("quarantine %s: %w", path, err)
	}
	return saved, nil
}

// Append writes e's record and returns once it is durable (written and
// fsynced). Appenders arriving while a flush is in progress are written
// and synced together by the next flush.
func (j *Journal) Append(e *Entry) error {
	if e.PCR >= NumPCRs || len(e.Template) == 0 || len(e.Template) > maxTemplateNameLen {
		return fmt.Errorf("journal %s: append: entry cannot be encoded (pcr %d, template %q)", j.path, e.PCR, e.Template)
	}
	rec := e.AppendBinary(nil, SHA1)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return fmt.Errorf("journal %s: append: %w", j.path, ErrJournalClosed)
	}
	j.nextSeq++
	my := j.nextSeq
	j.pending = append(j.pending, rec...)
	for {
		if j.durableSeq >= my {
			return nil
		}
		if j.failedSeq >= my {
			return j.lastErr
		}
		if !j.flushing {
			j.flush()
			continue
		}
		j.cond.Wait()
	}
}

// flush writes and syncs everything pending; j.mu is held on entry and
// exit but not during I/O. A write or fsync that fails fails the whole
// batch and is cut back off the file, so the file always ends with the
// last durable record and later appends start there (a full disk that
// gets space again works again).
func (j *Journal) flush() {
	j.flushing = true
	buf, upto := j.pending, j.nextSeq
	j.pending = j.spare[:0]
	j.mu.Unlock()
	err := j.writeAt(buf)
	j.mu.Lock()
	j.flushing = false
	j.spare = buf[:0]
	if err != nil {
		j.failedSeq, j.lastErr = upto, fmt.Errorf("journal %s: write: %w", j.path, err)
		j.log.WithFields(logrus.Fields{"journal": j.path, "error": err, "records_failed": upto - j.durableSeq}).Error("journal: write failed; batch cut back, not acknowledged")
	} else {
		j.durableSeq = upto
		j.syncs++
	}
	j.cond.Broadcast()
}

// writeAt appends buf at j.size and syncs it; on failure the file is cut
// back to j.size (or that is retried by the next call).
func (j *Journal) writeAt(buf []byte) error {
	if j.broken != nil {
		if err := j.f.Truncate(j.size); err != nil {
			return fmt.Errorf("cut back to %d: %w", j.size, err)
		}
		j.broken = nil
	}
	_, err := j.f.WriteAt(buf, j.size)
	if err == nil {
		err = j.f.Sync()
	}
	if err != nil {
		if terr := j.f.Truncate(j.size); terr != nil {
			j.broken = terr
		}
		return err
	}
	j.size += int64(len(buf))
	return nil
}

// Close waits for pending appends and closes the file. Append fails after it.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	for j.flushing || (j.durableSeq < j.nextSeq && j.failedSeq < j.nextSeq) {
		if !j.flushing {
			j.flush()
			continue
		}
		j.cond.Wait()
	}
	j.mu.Unlock()
	if err := j.f.Close(); err != nil {
		return fmt.Errorf("close journal %s: %w", j.path, err)
	}
	return nil
}
