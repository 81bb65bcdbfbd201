package measurelog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// rawRecord is a binary-list record split into its parts, slices of the
// record's bytes; only its structure is checked (splitRecord).
type rawRecord struct {
	pcr    uint32
	digest []byte // the template digest
	name   []byte // the template name
	ima    bool   // the "ima" template: d and n, no template data length
	d, n   []byte // ima: its fields
	td     []byte // other templates: the template data as hashed
}

// splitRecord splits the record at the beginning of data, whose template
// digests are ds bytes long, into r. It returns the record's length; a
// *needMore when data ends inside the record; or an error describing
// corruption. Every bound is checked here, once for every reader of
// records (parseRecord, the journal-backed lists' parseJournal); a record
// checked before (checked: a journal's, replayed at the start) skips the
// scans of its name's and ima name's bytes. Long by
// design: the record's parts in the kernel's order, each with its bounds
// check, on the start-up hot path (no per-part calls).
func splitRecord(data []byte, ds int, r *rawRecord, checked bool) (int, *needMore, error) {
	if len(data) < 4 {
		return 0, &needMore{need: 4, what: "pcr"}, nil
	}
	r.pcr = binary.LittleEndian.Uint32(data)
	if r.pcr >= NumPCRs {
		return 0, nil, fmt.Errorf("pcr %d out of range 0..%d", r.pcr, NumPCRs-1)
	}
	off := 4
	if len(data) < off+ds {
		return 0, &needMore{need: off + ds, what: "template digest"}, nil
	}
	r.digest = data[off : off+ds : off+ds]
	off += ds
	if len(data) < off+4 {
		return 0, &needMore{need: off + 4, what: "template name length"}, nil
	}
	nl := int(binary.LittleEndian.Uint32(data[off:]))
	if nl == 0 || nl > maxTemplateNameLen {
		return 0, nil, fmt.Errorf("template name length %d out of range 1..%d", nl, maxTemplateNameLen)
	}
	off += 4
	if len(data) < off+nl {
		return 0, &needMore{need: off + nl, what: "template name"}, nil
	}
	r.name = data[off : off+nl : off+nl]
	if !checked {
		for _, c := range r.name {
			if c <= ' ' || c > '~' {
				return 0, nil, fmt.Errorf("template name %q is not printable", r.name)
			}
		}
	}
	off += nl
	if r.ima = string(r.name) == "ima"; r.ima {
		if len(data) < off+SHA1.Size() {
			return 0, &needMore{need: off + SHA1.Size(), what: "d field"}, nil
		}
		r.d = data[off : off+SHA1.Size() : off+SHA1.Size()]
		off += SHA1.Size()
		if len(data) < off+4 {
			return 0, &needMore{need: off + 4, what: "n field length"}, nil
		}
		n := int(binary.LittleEndian.Uint32(data[off:]))
		if n > maxNameLen {
			return 0, nil, fmt.Errorf("ima template name of %d bytes, at most %d", n, maxNameLen)
		}
		off += 4
		if len(data) < off+n {
			return 0, &needMore{need: off + n, what: "n field"}, nil
		}
		r.n = data[off : off+n : off+n]
		if !checked && bytes.IndexByte(r.n, 0) >= 0 {
			return 0, nil, errors.New("ima template name contains a NUL byte")
		}
		return off + n, nil, nil
	}
	if len(data) < off+4 {
		return 0, &needMore{need: off + 4, what: "template data length"}, nil
	}
	tl := int(binary.LittleEndian.Uint32(data[off:]))
	if tl > MaxTemplateDataLen {
		return 0, nil, fmt.Errorf("template data length %d exceeds %d", tl, MaxTemplateDataLen)
	}
	off += 4
	if len(data) < off+tl {
		return 0, &needMore{need: off + tl, what: "template data"}, nil
	}
	r.td = data[off : off+tl : off+tl]
	return off + tl, nil, nil
}

// nextField splits template data's first field (a length and its bytes)
// off rest; ok is false when rest's length or bytes are short.
func nextField(rest []byte) (field, after []byte, ok bool) {
	if len(rest) < 4 {
		return nil, rest, false
	}
	n := binary.LittleEndian.Uint32(rest)
	if uint64(n) > uint64(len(rest)-4) {
		return nil, rest, false
	}
	return rest[4 : 4+n : 4+n], rest[4+n:], true
}
