package measurelog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

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
	err        error // sticky: the file's tail is in an unknown state
}

// ErrJournalClosed is returned by Append after Close.
var ErrJournalClosed = errors.New("journal closed")

// OpenJournal opens the journal at path, creating it when missing, and
// returns the entries it holds. A torn tail (the file ends inside a record:
// a write cut short by a crash) is cut off and logged; that is not an error.
// A corrupt record is cut off too, so the journal stays appendable, but its
// bytes are first saved to path+".corrupt-<unix nanoseconds>" and OpenJournal returns the
// journal and the entries before it together with an error wrapping the
// *DecodeError; callers decide whether to go on.
func OpenJournal(path string) (*Journal, []*Entry, error) {
	return OpenJournalLogger(path, logrus.StandardLogger())
}

// OpenJournalLogger is OpenJournal logging through log.
func OpenJournalLogger(path string, log logrus.FieldLogger) (*Journal, []*Entry, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open journal: %w", err)
	}
	if err := fsync.Dir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read journal %s: %w", path, err)
	}
	entries, derr := DecodeBinary(data, SHA1)
	var retErr error
	if derr != nil {
		var de *DecodeError
		if !errors.As(derr, &de) {
			f.Close()
			return nil, nil, fmt.Errorf("replay journal %s: %w", path, derr)
		}
		fields := logrus.Fields{"journal": path, "offset": de.Offset, "size": len(data), "entries": len(entries), "reason": de.Reason}
		if !de.Torn {
			saved := fmt.Sprintf("%s.corrupt-%d", path, time.Now().UnixNano())
			fields["saved"] = saved
			if err := os.WriteFile(saved, data[de.Offset:], 0o600); err != nil {
				f.Close()
				return nil, nil, fmt.Errorf("save corrupt tail of journal %s: %w", path, err)
			}
			log.WithFields(fields).Error("journal: corrupt record; tail saved and cut")
			retErr = fmt.Errorf("replay journal %s: %w", path, derr)
		} else {
			log.WithFields(fields).Warn("journal: torn tail cut")
		}
		if err := f.Truncate(de.Offset); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("cut journal %s at %d: %w", path, de.Offset, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("sync journal %s: %w", path, err)
		}
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("seek journal %s: %w", path, err)
	}
	j := &Journal{path: path, f: f, log: log}
	j.cond = sync.NewCond(&j.mu)
	return j, entries, retErr
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
	if j.err != nil {
		return j.err
	}
	j.nextSeq++
	my := j.nextSeq
	j.pending = append(j.pending, rec...)
	for {
		if j.durableSeq >= my {
			return nil
		}
		if j.err != nil {
			return j.err
		}
		if !j.flushing {
			j.flush()
			continue
		}
		j.cond.Wait()
	}
}

// flush writes and syncs everything pending; j.mu is held on entry and
// exit but not during I/O.
func (j *Journal) flush() {
	j.flushing = true
	buf, upto := j.pending, j.nextSeq
	j.pending = j.spare[:0]
	j.mu.Unlock()
	_, err := j.f.Write(buf)
	if err == nil {
		err = j.f.Sync()
	}
	j.mu.Lock()
	j.flushing = false
	j.spare = buf[:0]
	if err != nil {
		j.err = fmt.Errorf("journal %s: write: %w", j.path, err)
		j.log.WithFields(logrus.Fields{"journal": j.path, "error": err}).Error("journal: write failed; later appends fail too")
	} else {
		j.durableSeq = upto
		j.syncs++
	}
	j.cond.Broadcast()
}

// Close waits for pending appends and closes the file. Append fails after it.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	for j.flushing || (j.durableSeq < j.nextSeq && j.err == nil) {
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
