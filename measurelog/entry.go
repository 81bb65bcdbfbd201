package measurelog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// NumPCRs bounds PCR indexes: the kernel rejects pcr= values that do not fit
// its 64-bit measured_pcrs mask (INVALID_PCR in ima_policy.c).
const NumPCRs = 64

// DefaultPCR is CONFIG_IMA_MEASURE_PCR_IDX, the PCR of boot_aggregate.
const DefaultPCR = 10

// BootAggregateName is the name of the first entry of every list.
const BootAggregateName = "boot_aggregate"

// maxNameLen is IMA_EVENT_NAME_LEN_MAX, the longest "n" field.
const maxNameLen = 255

// Signature types of security.ima / security.evm values kept by the kernel.
const (
	xattrIMADigSig       = 0x03 // EVM_IMA_XATTR_DIGSIG
	xattrEVMPortableSig  = 0x05 // EVM_XATTR_PORTABLE_DIGSIG
	xattrIMAVerityDigSig = 0x06 // IMA_VERITY_DIGSIG
)

// Measurement is what a source observed; NewEntry renders it through a template.
type Measurement struct {
	FileDigest []byte // digest of the file or buffer
	FileAlgo   Algo   // algorithm of FileDigest
	// DigestSHA1 is the file's SHA-1 digest when FileAlgo is another
	// algorithm and the template has a "d" field (TemplateNeeds' SHA1):
	// "d" holds a SHA-1 only, which ima_eventdigest_init computes again
	// from the file. Ignored otherwise.
	DigestSHA1 []byte
	Verity     bool   // d-ngv2: "verity:" instead of "ima:"
	Name       string // path as the measured task sees it, or "boot_aggregate", or a buffer's name
	Sig        []byte // security.ima value (kept in "sig" only when it is a signature: type 0x03 or 0x06)
	Buf        []byte // ima-buf payload
	Namespace  string // ns field of ima-ns (our own template)
	UID, GID   uint32 // iuid/igid
	Mode       uint16 // imode; 0 means "no inode" (a buffer): iuid, igid and imode stay empty

	// EVMSig is the security.evm value: kept in "evmsig" (and in "sig" when
	// Sig is not a signature) only when it is a portable signature (type 0x05).
	EVMSig []byte
	// ModSig is a file's appended signature (ima-modsig "modsig"), and
	// ModSigDigest/ModSigAlgo the digest it signs ("d-modsig"); all empty
	// when the file has none.
	ModSig       []byte
	ModSigDigest []byte
	ModSigAlgo   Algo
	// Xattrs are the file's extended attributes among EVMXattrNames, in
	// that order (xattrnames, xattrlengths, xattrvalues; TemplateNeeds'
	// Xattrs). Empty, the three fields are empty.
	Xattrs []Xattr
}

// Entry is one measurement-list record: PCR, template name and the raw
// template data of each field.
//
// Fields hold each field's data exactly as the binary list carries it. For
// the legacy "ima" template that means "d" is the 20-byte SHA-1 digest and
// "n" the name without its NUL (the kernel prints it with strlen); for all
// other templates a field's data is what the kernel hashes (n-ng includes
// its NUL).
type Entry struct {
	PCR       uint32
	Template  string
	Fields    [][]byte // raw field data in template order, exactly as in the binary list
	Violation bool     // template digest is all zeros in every bank; PCR extended with all 0xff

	// sums caches template digests of Fields: the decoder keeps the one it
	// checked against the record, CacheDigests the ones it computes. So an
	// Entry's Template and Fields must not change once it was decoded or
	// its digests cached.
	sums entrySums
}

// entrySums holds the cached SHA1 and SHA256 template digests of an entry
// (the banks every list keeps); other banks are computed when asked.
type entrySums struct {
	have   uint8 // 1<<SHA1, 1<<SHA256: which are valid
	sha1   [20]byte
	sha256 [32]byte
}

func (s *entrySums) get(bank Algo) []byte {
	switch {
	case bank == SHA1 && s.have&(1<<SHA1) != 0:
		return s.sha1[:]
	case bank == SHA256 && s.have&(1<<SHA256) != 0:
		return s.sha256[:]
	}
	return nil
}

func (s *entrySums) set(bank Algo, d []byte) {
	switch bank {
	case SHA1:
		s.have |= 1 << SHA1
		copy(s.sha1[:], d)
	case SHA256:
		s.have |= 1 << SHA256
		copy(s.sha256[:], d)
	}
}

// CacheDigests computes and keeps e's SHA1 and SHA256 template digests,
// so that appending e to several lists, and journaling it, computes each
// only once. Call it while e is not shared with other goroutines (it
// writes e); afterwards e must not change.
func (e *Entry) CacheDigests() {
	if e.Violation {
		return
	}
	ima := e.isIMA()
	var buf [32]byte
	for _, b := range [...]Algo{SHA1, SHA256} {
		if e.sums.get(b) == nil {
			e.sums.set(b, templateDigest(buf[:0], ima, e.Fields, b))
		}
	}
}

// digestInto appends e's template digest in bank (all zeros for a
// violation) to dst, from the cache when it holds it.
func (e *Entry) digestInto(dst []byte, ima bool, bank Algo) []byte {
	if e.Violation {
		return append(dst, zeros[:bank.Size()]...)
	}
	if d := e.sums.get(bank); d != nil {
		return append(dst, d...)
	}
	return templateDigest(dst, ima, e.Fields, bank)
}

// NewEntry renders m through template the way IMA builds an entry
// (ima_alloc_init_template): each field from its init function's rules.
// Names get IMA's treatment (spaces become '_'; the ima template's 255-byte
// limit). The "d" field takes m.DigestSHA1 when m.FileAlgo is not SHA-1
// (see TemplateNeeds for what else a template asks of a source).
func NewEntry(template string, pcr uint32, m Measurement) (*Entry, error) {
	e, err := newEntry(template, pcr, m, false)
	if err != nil {
		return nil, fmt.Errorf("new %s entry for %q: %w", template, m.Name, err)
	}
	return e, nil
}

func newEntry(template string, pcr uint32, m Measurement, violation bool) (*Entry, error) {
	t, err := lookup(template)
	if err != nil {
		return nil, err
	}
	if pcr >= NumPCRs {
		return nil, fmt.Errorf("pcr %d out of range 0..%d", pcr, NumPCRs-1)
	}
	if strings.IndexByte(m.Name, 0) >= 0 {
		return nil, errors.New("name contains a NUL byte")
	}
	if strings.IndexByte(m.Namespace, 0) >= 0 {
		return nil, errors.New("namespace label contains a NUL byte")
	}
	e := &Entry{PCR: pcr, Template: t.name, Fields: make([][]byte, len(t.ids)), Violation: violation}
	for i, id := range t.ids {
		data, err := fieldData(id, m, violation)
		if err != nil {
			return nil, err
		}
		e.Fields[i] = data
	}
	return e, nil
}

// NewViolation returns the entry IMA records for a measurement violation
// (open_writers, ToMToU): a zero digest of fileAlgo in d-ng/d-ngv2 (20 zero
// bytes in "d"), the name, every other field empty. Its template digest is
// all zeros and it extends the PCR with all 0xff.
func NewViolation(template string, pcr uint32, name string, fileAlgo Algo) (*Entry, error) {
	e, err := newEntry(template, pcr, Measurement{Name: name, FileAlgo: fileAlgo}, true)
	if err != nil {
		return nil, fmt.Errorf("new %s violation for %q: %w", template, name, err)
	}
	return e, nil
}

// NewFileViolation returns the violation record of a file measurement as
// ima_add_violation makes it: like NewViolation, but with m's namespace and
// what the kernel reads from the file itself, which a violation keeps: a
// portable signature of m.EVMSig in "sig" and "evmsig", m.Xattrs, and the
// inode's ids and mode. m's digests and security.ima are not used.
func NewFileViolation(template string, pcr uint32, m Measurement) (*Entry, error) {
	e, err := newEntry(template, pcr, m, true)
	if err != nil {
		return nil, fmt.Errorf("new %s violation for %q: %w", template, m.Name, err)
	}
	return e, nil
}

// NewBootAggregate returns the first entry of a list: "boot_aggregate" on
// PCR 10 with digest (of algo) as its file digest; a nil digest stands for
// the all-zero aggregate of a machine without TPM. The ima template only
// carries a sha1 aggregate.
func NewBootAggregate(template string, digest []byte, algo Algo) (*Entry, error) {
	if digest == nil {
		digest = make([]byte, algo.Size())
	}
	return NewEntry(template, DefaultPCR, Measurement{FileDigest: digest, FileAlgo: algo, Name: BootAggregateName})
}

// isIMA reports whether e uses the legacy ima template.
func (e *Entry) isIMA() bool { return e.Template == TemplateIMA }

// appendTemplateData appends the (u32 len + data) of every field.
func appendTemplateData(dst []byte, fields [][]byte) []byte {
	for _, f := range fields {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(f)))
		dst = append(dst, f...)
	}
	return dst
}

func templateDataLen(fields [][]byte) int {
	n := 0
	for _, f := range fields {
		n += 4 + len(f)
	}
	return n
}

// TemplateData returns the concatenated (u32 len + data) of all fields: the
// template data of the binary list, which is also what the template digest
// covers for every template but "ima".
func (e *Entry) TemplateData() []byte {
	return appendTemplateData(make([]byte, 0, templateDataLen(e.Fields)), e.Fields)
}

var zeroPad [maxNameLen + 1]byte

// templateDigest computes the digest of a template's fields in bank, as
// ima_calc_field_array_hash_tfm does. The hashed bytes are laid out in one
// buffer (on the stack for the usual sizes) and hashed in one go.
func templateDigest(dst []byte, ima bool, fields [][]byte, bank Algo) []byte {
	var sb [1024]byte
	buf := sb[:0]
	if ima {
		// ima: d, then n (with its NUL) zero-padded to 256 bytes.
		for i, f := range fields {
			if i == 1 {
				if len(f) > len(zeroPad) {
					f = f[:len(zeroPad)]
				}
				buf = append(buf, f...)
				buf = append(buf, zeroPad[:len(zeroPad)-len(f)]...)
				continue
			}
			buf = append(buf, f...)
		}
	} else {
		buf = appendTemplateData(buf, fields)
	}
	return bank.appendSum(dst, buf)
}

// TemplateDigest returns the template digest of e in bank (all zeros for a
// violation): the value the lists print and the PCR is extended with.
func (e *Entry) TemplateDigest(bank Algo) []byte {
	if e.Violation {
		return make([]byte, bank.Size())
	}
	return e.digestInto(make([]byte, 0, bank.Size()), e.isIMA(), bank)
}

const hexDigits = "0123456789abcdef"

// hexPairs[c] is c's two lowercase hex digits, as a little-endian uint16.
var hexPairs = func() (t [256]uint16) {
	for c := range t {
		t[c] = uint16(hexDigits[c>>4]) | uint16(hexDigits[c&0xf])<<8
	}
	return t
}()

// appendHex appends b in lowercase hex: one table load and one 16-bit
// store per byte (it is most of the ascii lists' rendering time).
func appendHex(dst, b []byte) []byte {
	n := len(dst)
	dst = slices.Grow(dst, 2*len(b))[:n+2*len(b)]
	h := dst[n:]
	for len(b) >= 4 {
		binary.LittleEndian.PutUint64(h, uint64(hexPairs[b[0]])|uint64(hexPairs[b[1]])<<16|
			uint64(hexPairs[b[2]])<<32|uint64(hexPairs[b[3]])<<48)
		b, h = b[4:], h[8:]
	}
	for i, c := range b {
		binary.LittleEndian.PutUint16(h[2*i:], hexPairs[c])
	}
	return dst
}

// cString returns b up to its first NUL, as %s and strlen see it.
func cString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// appendFieldASCII renders one field as ima_show_template_data_ascii does.
func appendFieldASCII(dst []byte, k fieldKind, data []byte) []byte {
	switch k {
	case kindDigestWithAlgo, kindDigestWithTypeAlgo:
		s := cString(data)
		i := bytes.LastIndexByte(s, ':')
		if i < 0 {
			// The kernel never stores such a field; print it all as hex.
			return appendHex(dst, data)
		}
		if i != 0 {
			dst = append(dst, s...)
		}
		if i+2 >= len(data) {
			return dst
		}
		return appendHex(dst, data[i+2:])
	case kindDigest, kindHex:
		return appendHex(dst, data)
	case kindString:
		return append(dst, cString(data)...)
	case kindUint:
		switch len(data) {
		case 1:
			return strconv.AppendUint(dst, uint64(data[0]), 10)
		case 2:
			return strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint16(data)), 10)
		case 4:
			return strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint32(data)), 10)
		case 8:
			return strconv.AppendUint(dst, binary.LittleEndian.Uint64(data), 10)
		}
	}
	return dst
}

// appendASCII renders one ascii list line (ima_ascii_measurements_show).
func appendASCII(dst []byte, pcr uint32, t *compiled, fields [][]byte, digest []byte) []byte {
	if pcr < 10 {
		dst = append(dst, ' ')
	}
	dst = strconv.AppendUint(dst, uint64(pcr), 10)
	dst = append(dst, ' ')
	dst = appendHex(dst, digest)
	dst = append(dst, ' ')
	dst = append(dst, t.name...)
	for i, f := range fields {
		dst = append(dst, ' ')
		if len(f) == 0 {
			continue
		}
		k := kindHex
		if i < len(t.kinds) {
			k = t.kinds[i]
		}
		dst = appendFieldASCII(dst, k, f)
	}
	return append(dst, '\n')
}

// appendBinary renders one binary list record (ima_measurements_show).
func appendBinary(dst []byte, pcr uint32, t *compiled, fields [][]byte, digest []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, pcr)
	dst = append(dst, digest...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(t.name)))
	dst = append(dst, t.name...)
	if t.ima {
		for i, f := range fields {
			switch i {
			case 0: // d: no length
				dst = append(dst, f...)
			default: // n: strlen + name
				f = cString(f)
				dst = binary.LittleEndian.AppendUint32(dst, uint32(len(f)))
				dst = append(dst, f...)
			}
		}
		return dst
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(templateDataLen(fields)))
	return appendTemplateData(dst, fields)
}

// compiledOrRaw returns e's template, or a stand-in that prints every field
// as hex when the template is unknown (an Entry built by hand).
func (e *Entry) compiled() *compiled {
	if t, err := lookup(e.Template); err == nil {
		return t
	}
	return &compiled{name: e.Template}
}

// AppendASCII appends e's line of the ascii list for bank: the legacy
// ascii_runtime_measurements and its _sha1 twin use SHA1, the
// ascii_runtime_measurements_<algo> files their algorithm.
func (e *Entry) AppendASCII(dst []byte, bank Algo) []byte {
	t := e.compiled()
	var d [64]byte
	return appendASCII(dst, e.PCR, t, e.Fields, e.digestInto(d[:0], t.ima, bank))
}

// AppendBinary appends e's record of the binary list for bank.
func (e *Entry) AppendBinary(dst []byte, bank Algo) []byte {
	t := e.compiled()
	var d [64]byte
	return appendBinary(dst, e.PCR, t, e.Fields, e.digestInto(d[:0], t.ima, bank))
}

// FileDigest returns the file digest of e and its algorithm's name, parsed
// from its d, d-ng or d-ngv2 field ("sha1" for d).
func (e *Entry) FileDigest() (algo string, digest []byte, err error) {
	t, err := lookup(e.Template)
	if err != nil {
		return "", nil, fmt.Errorf("file digest: %w", err)
	}
	for i, id := range t.ids {
		if i >= len(e.Fields) {
			break
		}
		f := e.Fields[i]
		switch id {
		case "d":
			return "sha1", f, nil
		case "d-ng", "d-ngv2":
			z := bytes.IndexByte(f, 0)
			if z < 1 || f[z-1] != ':' {
				return "", nil, fmt.Errorf("file digest: malformed %s field", id)
			}
			prefix := string(f[:z-1])
			if id == "d-ngv2" {
				_, a, ok := strings.Cut(prefix, ":")
				if !ok {
					return "", nil, fmt.Errorf("file digest: malformed %s field", id)
				}
				prefix = a
			}
			return prefix, f[z+1:], nil
		}
	}
	return "", nil, fmt.Errorf("file digest: template %q has no digest field", e.Template)
}

// Name returns the event name (the n or n-ng field without its NUL).
func (e *Entry) Name() string {
	t, err := lookup(e.Template)
	if err != nil {
		return ""
	}
	for i, id := range t.ids {
		if (id == "n" || id == "n-ng") && i < len(e.Fields) {
			return string(cString(e.Fields[i]))
		}
	}
	return ""
}
