package measurelog

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// The template fields' init functions (ima_template_lib.c): how NewEntry
// renders each field of a Measurement.

// imaName applies the kernel's rules for an event name (ima_eventname_init_common
// and ima_write_template_field_data): spaces become '_' (the ascii lists use
// space as separator), and for the size-limited "n" field of the ima
// template a name longer than 255 bytes is replaced by the file's own name
// (the dentry name, here the last path element), or cut to 255 bytes when
// it has none.
func imaName(name string, limit bool) string {
	if limit && len(name) > maxNameLen {
		base := name
		if i := strings.LastIndexByte(name, '/'); i >= 0 && i < len(name)-1 {
			base = name[i+1:]
		}
		if len(base) > maxNameLen {
			base = base[:maxNameLen]
		}
		name = base
	}
	return strings.ReplaceAll(name, " ", "_")
}

func digestWithAlgo(prefix string, algo Algo, digest []byte) []byte {
	b := make([]byte, 0, len(prefix)+len(algo.String())+2+algo.Size())
	b = append(b, prefix...)
	b = append(b, algo.String()...)
	b = append(b, ':', 0)
	if digest == nil {
		return append(b, make([]byte, algo.Size())...)
	}
	return append(b, digest...)
}

func stringField(s string) []byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}

func checkDigest(what string, algo Algo, digest []byte) error {
	if !algo.Valid() {
		return fmt.Errorf("%s: unknown hash algorithm %d", what, uint8(algo))
	}
	if len(digest) != algo.Size() {
		return fmt.Errorf("%s: %d bytes, a %s digest has %d", what, len(digest), algo, algo.Size())
	}
	return nil
}

// fieldData renders field id of m as its init function in
// ima_template_lib.c does (violation: as for a violation record). One
// switch over the kernel's fields, kept whole so it reads against
// supported_fields[].
func fieldData(id string, m Measurement, violation bool) ([]byte, error) {
	var data []byte
	switch id {
	case "d", "d-ng", "d-ngv2", "d-modsig":
		return digestField(id, m, violation)
	case "n":
		data = []byte(imaName(m.Name, true))
	case "n-ng":
		data = stringField(imaName(m.Name, false))
	case "ns":
		if m.Namespace != "" {
			data = stringField(imaName(m.Namespace, false))
		}
	case "sig":
		// A violation has no security.ima value: ima_eventsig_init falls
		// back to ima_eventevmsig_init, which reads the file.
		switch {
		case !violation && len(m.Sig) > 0 && (m.Sig[0] == xattrIMADigSig || m.Sig[0] == xattrIMAVerityDigSig):
			data = append([]byte(nil), m.Sig...)
		case len(m.EVMSig) > 0 && m.EVMSig[0] == xattrEVMPortableSig:
			data = append([]byte(nil), m.EVMSig...)
		}
	case "evmsig":
		if len(m.EVMSig) > 0 && m.EVMSig[0] == xattrEVMPortableSig {
			data = append([]byte(nil), m.EVMSig...)
		}
	case "buf":
		if len(m.Buf) > 0 && !violation {
			data = append([]byte(nil), m.Buf...)
		}
	case "modsig":
		if len(m.ModSig) > 0 && !violation {
			data = append([]byte(nil), m.ModSig...)
		}
	case "xattrnames", "xattrlengths", "xattrvalues":
		names, lengths, values := xattrFields(m.Xattrs)
		switch id {
		case "xattrnames":
			data = names
		case "xattrlengths":
			data = lengths
		default:
			data = values
		}
	case "iuid", "igid":
		if m.Mode != 0 {
			v := m.UID
			if id == "igid" {
				v = m.GID
			}
			data = binary.LittleEndian.AppendUint32(nil, v)
		}
	case "imode":
		if m.Mode != 0 {
			data = binary.LittleEndian.AppendUint16(nil, m.Mode)
		}
	}
	return data, nil
}

// digestField renders the digest fields: ima_eventdigest_init ("d"),
// _ng_init, _ngv2_init and _modsig_init.
func digestField(id string, m Measurement, violation bool) ([]byte, error) {
	switch id {
	case "d":
		if violation {
			return make([]byte, SHA1.Size()), nil
		}
		d, err := legacyDigest(m)
		if err != nil {
			return nil, err
		}
		return append([]byte(nil), d...), nil
	case "d-modsig":
		if len(m.ModSig) == 0 || violation {
			return nil, nil
		}
		if err := checkDigest("field d-modsig", m.ModSigAlgo, m.ModSigDigest); err != nil {
			return nil, err
		}
		return digestWithAlgo("", m.ModSigAlgo, m.ModSigDigest), nil
	}
	prefix := ""
	if id == "d-ngv2" {
		prefix = "ima:"
		if m.Verity && !violation {
			prefix = "verity:"
		}
	}
	if violation {
		if !m.FileAlgo.Valid() {
			return nil, fmt.Errorf("field %s: unknown hash algorithm %d", id, uint8(m.FileAlgo))
		}
		return digestWithAlgo(prefix, m.FileAlgo, nil), nil
	}
	if err := checkDigest("field "+id, m.FileAlgo, m.FileDigest); err != nil {
		return nil, err
	}
	return digestWithAlgo(prefix, m.FileAlgo, m.FileDigest), nil
}

// legacyDigest returns the "d" field's digest (ima_eventdigest_init): the
// file digest when it is a SHA-1, else the SHA-1 the source computed too.
// The kernel also keeps an MD5 file digest there; imafs does not: a 16-byte
// "d" makes a list no decoder reads (they take 20 bytes, without a length).
func legacyDigest(m Measurement) ([]byte, error) {
	if m.FileAlgo == SHA1 {
		if err := checkDigest("field d", m.FileAlgo, m.FileDigest); err != nil {
			return nil, err
		}
		return m.FileDigest, nil
	}
	if m.DigestSHA1 == nil {
		return nil, fmt.Errorf("field d: a %s file digest and no sha1 digest of the file (the ima template holds a sha1)", m.FileAlgo)
	}
	if err := checkDigest("field d", SHA1, m.DigestSHA1); err != nil {
		return nil, err
	}
	return m.DigestSHA1, nil
}
