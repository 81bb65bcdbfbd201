package imans

import (
	"errors"
	"fmt"
	"hash"
	"io"

	"golang.org/x/sys/unix"

	"github.com/imafs/imafs/internal/xattr"
	"github.com/imafs/imafs/measurelog"
)

// HashAlgos returns the algorithms every source hashes a file in to
// measure it through template: fileAlgo first, then SHA-1 when the
// template's "d" field needs it (measurelog.TemplateNeeds). Sources hash
// the file once, into all of them (MultiHash), and pass SetDigests' result
// to measurelog.NewEntry.
func HashAlgos(template string, fileAlgo measurelog.Algo) ([]measurelog.Algo, error) {
	a, err := measurelog.HashAlgos(template, fileAlgo)
	if err != nil {
		return nil, fmt.Errorf("hash algorithms for %s: %w", template, err)
	}
	return a, nil
}

// MultiHash is one hash per algorithm, fed by one writer.
type MultiHash struct {
	algos []measurelog.Algo
	hs    []hash.Hash
}

// NewMultiHash returns a MultiHash over algos (HashAlgos' result).
func NewMultiHash(algos []measurelog.Algo) *MultiHash {
	m := &MultiHash{algos: algos, hs: make([]hash.Hash, len(algos))}
	for i, a := range algos {
		m.hs[i] = a.New()
	}
	return m
}

// Write feeds p to every hash.
func (m *MultiHash) Write(p []byte) (int, error) {
	for _, h := range m.hs {
		h.Write(p)
	}
	return len(p), nil
}

// Sums returns the digests, in the order of the algorithms.
func (m *MultiHash) Sums() [][]byte {
	out := make([][]byte, len(m.hs))
	for i, h := range m.hs {
		out[i] = h.Sum(nil)
	}
	return out
}

// SetDigests puts digests (in the order of algos) into m: the first is
// the file digest in algos[0], a SHA-1 after it the "d" field's.
func SetDigests(m *measurelog.Measurement, algos []measurelog.Algo, digests [][]byte) {
	m.FileAlgo, m.FileDigest = algos[0], digests[0]
	for i := 1; i < len(algos) && i < len(digests); i++ {
		if algos[i] == measurelog.SHA1 {
			m.DigestSHA1 = digests[i]
		}
	}
}

// hashInto reads r to its end into h.
func hashInto(h io.Writer, r io.ReaderAt) error {
	_, err := io.Copy(h, io.NewSectionReader(r, 0, 1<<62))
	return err
}

// ReadTemplateXattrs reads into m what template needs of the file behind
// fd besides its digests and the security.ima signature: security.evm
// (EVMSig) and the EVM-protected attributes (Xattrs), as the kernel's
// ima_eventevmsig_init and evm_read_protected_xattrs read them. Like the
// kernel, a file that cannot be read leaves the fields empty: an error
// other than "no such attribute" while listing empties Xattrs.
func ReadTemplateXattrs(fd int, template string, m *measurelog.Measurement) error {
	needs, err := measurelog.TemplateNeeds(template, m.FileAlgo)
	if err != nil {
		return fmt.Errorf("read template xattrs: %w", err)
	}
	if needs.EVMSig {
		if v, err := xattr.Get(fd, measurelog.XattrEVM); err == nil && len(v) > 0 {
			m.EVMSig = v
		}
	}
	if needs.Xattrs {
		m.Xattrs = nil
		for _, name := range measurelog.EVMXattrNames {
			v, err := xattr.Get(fd, name)
			if errors.Is(err, unix.ENODATA) {
				continue
			}
			if err != nil {
				m.Xattrs = nil
				break
			}
			m.Xattrs = append(m.Xattrs, measurelog.Xattr{Name: name, Value: v})
		}
	}
	return nil
}
