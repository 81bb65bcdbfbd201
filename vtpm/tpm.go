package vtpm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	tpm2direct "github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/imafs/imafs/measurelog"
)

// Banks are the PCR banks imafs keeps for every namespace, in this order:
// the same two banks as every measurelog.List.
var Banks = []measurelog.Algo{measurelog.SHA1, measurelog.SHA256}

// MeasurePCR is the PCR IMA extends unless a policy rule says pcr=.
const MeasurePCR = 10

// maxPCR is the highest PCR index a TPM 2.0 (PC Client) has.
const maxPCR = 23

// TPM is an open TPM 2.0: a namespace's swtpm, or the host's TPM
// (/dev/tpmrm0, or a swtpm socket standing in for it). Its methods are safe
// for concurrent use: commands are serialized, as a TPM runs one at a time.
type TPM struct {
	mu   sync.Mutex
	rwc  io.ReadWriteCloser
	path string
}

// OpenHost opens the TPM at path: a TPM character device (/dev/tpmrm0) or
// the server socket of a swtpm started with --server type=unixio. The
// daemon's --tpm option names it. The connection is checked to be a TPM 2.0.
func OpenHost(path string) (*TPM, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open tpm %s: %w", path, err)
	}
	var rwc io.ReadWriteCloser
	switch {
	case fi.Mode()&os.ModeDevice != 0:
		rwc, err = tpm2.OpenTPM(path)
	case fi.Mode()&os.ModeSocket != 0:
		rwc, err = dialTPMSocket(path)
	default:
		err = fmt.Errorf("%s is neither a TPM device nor a socket", fi.Mode().Type())
	}
	if err != nil {
		return nil, fmt.Errorf("open tpm %s: %w", path, err)
	}
	t := &TPM{rwc: rwc, path: path}
	if _, err := tpm2.GetManufacturer(rwc); err != nil {
		rwc.Close()
		return nil, fmt.Errorf("open tpm %s: not a TPM 2.0: %w", path, err)
	}
	return t, nil
}

// Path is the device or socket the TPM was opened on.
func (t *TPM) Path() string { return t.path }

// Close closes the connection (it does not stop a swtpm process).
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rwc == nil {
		return nil
	}
	err := t.rwc.Close()
	t.rwc = nil
	if err != nil {
		return fmt.Errorf("close tpm %s: %w", t.path, err)
	}
	return nil
}

// tpmAlg maps a measurelog algorithm to the TPM's algorithm identifier.
func tpmAlg(a measurelog.Algo) (tpm2.Algorithm, error) {
	switch a {
	case measurelog.SHA1:
		return tpm2.AlgSHA1, nil
	case measurelog.SHA256:
		return tpm2.AlgSHA256, nil
	case measurelog.SHA384:
		return tpm2.AlgSHA384, nil
	case measurelog.SHA512:
		return tpm2.AlgSHA512, nil
	}
	return 0, fmt.Errorf("hash algorithm %v has no TPM PCR bank", a)
}

func (t *TPM) conn() (io.ReadWriter, error) {
	if t.rwc == nil {
		return nil, fmt.Errorf("tpm %s: closed", t.path)
	}
	return t.rwc, nil
}

// ReadPCRs reads the given PCRs of one bank.
func (t *TPM) ReadPCRs(bank measurelog.Algo, indexes []int) (map[int][]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.readPCRsLocked(bank, indexes)
}

func (t *TPM) readPCRsLocked(bank measurelog.Algo, indexes []int) (map[int][]byte, error) {
	alg, err := tpmAlg(bank)
	if err != nil {
		return nil, err
	}
	rw, err := t.conn()
	if err != nil {
		return nil, err
	}
	for _, i := range indexes {
		if i < 0 || i > maxPCR {
			return nil, fmt.Errorf("read %s PCR %d: no such PCR", bank, i)
		}
	}
	pcrs, err := client.ReadPCRs(rw, tpm2.PCRSelection{Hash: alg, PCRs: indexes})
	if err != nil {
		return nil, fmt.Errorf("read %s PCRs %v from tpm %s: %w", bank, indexes, t.path, err)
	}
	out := make(map[int][]byte, len(indexes))
	for _, i := range indexes {
		v, ok := pcrs.GetPcrs()[uint32(i)]
		if !ok {
			return nil, fmt.Errorf("read %s PCR %d from tpm %s: missing in the response (bank not allocated?)", bank, i, t.path)
		}
		out[i] = v
	}
	return out, nil
}

// ReadPCR reads one PCR of one bank.
func (t *TPM) ReadPCR(bank measurelog.Algo, index int) ([]byte, error) {
	m, err := t.ReadPCRs(bank, []int{index})
	if err != nil {
		return nil, err
	}
	return m[index], nil
}

// AllocatedBanks lists the PCR banks the TPM has allocated.
func (t *TPM) AllocatedBanks() ([]tpm2.Algorithm, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rw, err := t.conn()
	if err != nil {
		return nil, err
	}
	sels, err := client.AllocatedPCRs(rw)
	if err != nil {
		return nil, fmt.Errorf("list PCR banks of tpm %s: %w", t.path, err)
	}
	var out []tpm2.Algorithm
	for _, s := range sels {
		out = append(out, s.Hash)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// ExtendPCR extends PCR index with one digest per bank, all banks in one
// TPM2_PCR_Extend command so that the banks move together.
func (t *TPM) ExtendPCR(index int, digests map[measurelog.Algo][]byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.extendPCRLocked(index, digests)
}

func (t *TPM) extendPCRLocked(index int, digests map[measurelog.Algo][]byte) error {
	if index < 0 || index > maxPCR {
		return fmt.Errorf("extend PCR %d: no such PCR", index)
	}
	rw, err := t.conn()
	if err != nil {
		return err
	}
	algos := make([]measurelog.Algo, 0, len(digests))
	for a := range digests {
		algos = append(algos, a)
	}
	sort.Slice(algos, func(i, j int) bool { return algos[i] < algos[j] })
	var list tpm2direct.TPMLDigestValues
	for _, a := range algos {
		alg, err := tpmAlg(a)
		if err != nil {
			return fmt.Errorf("extend PCR %d: %w", index, err)
		}
		d := digests[a]
		if len(d) != a.Size() {
			return fmt.Errorf("extend %s PCR %d: digest is %d bytes, want %d", a, index, len(d), a.Size())
		}
		list.Digests = append(list.Digests, tpm2direct.TPMTHA{HashAlg: tpm2direct.TPMIAlgHash(alg), Digest: d})
	}
	cmd := tpm2direct.PCRExtend{
		PCRHandle: tpm2direct.AuthHandle{
			Handle: tpm2direct.TPMHandle(index),
			Auth:   tpm2direct.PasswordAuth(nil),
		},
		Digests: list,
	}
	if _, err := cmd.Execute(transport.FromReadWriter(rw)); err != nil {
		return fmt.Errorf("extend PCR %d of tpm %s: %w", index, t.path, err)
	}
	return nil
}

// EntryDigests is what an IMA entry extends into each bank: its template
// digest, or all 0xff for a violation (whose template digest is all zeros),
// as the kernel and measurelog.PCRs do.
func EntryDigests(e *measurelog.Entry) (map[measurelog.Algo][]byte, error) {
	out := make(map[measurelog.Algo][]byte, len(Banks))
	for _, b := range Banks {
		var d []byte
		if e.Violation {
			d = bytes.Repeat([]byte{0xff}, b.Size())
		} else {
			d = e.TemplateDigest(b)
		}
		if len(d) != b.Size() {
			return nil, fmt.Errorf("entry %q: %s template digest is %d bytes, want %d", e.Name(), b, len(d), b.Size())
		}
		out[b] = d
	}
	return out, nil
}

// Extend extends e.PCR in the sha1 and sha256 banks with e's template
// digests (0xff.. for a violation), exactly what measurelog.PCRs does.
func (t *TPM) Extend(e *measurelog.Entry) error {
	d, err := EntryDigests(e)
	if err != nil {
		return err
	}
	return t.ExtendPCR(int(e.PCR), d)
}
