package fs

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/imans"
)

// QuoteFileName is the file in integrity/ima through which root in a
// container gets its own vTPM quote (not a kernel file: the kernel has no
// per-namespace TPM).
const QuoteFileName = "quote"

// modeQuote: like policy, for root only.
const modeQuote = 0o600

// maxNonce bounds a nonce (hex digits).
const maxNonceHex = 128

// ErrNoVTPM is what a Quoter returns for a namespace without a vTPM; the
// quote file answers ENODEV.
var ErrNoVTPM = errors.New("no vTPM for this namespace")

// A Quoter returns the attestation bundle (JSON) of ns's vTPM for nonce.
type Quoter func(ns *imans.Namespace, nonce []byte) ([]byte, error)

var (
	_ gofs.NodeOpener    = (*quoteNode)(nil)
	_ gofs.NodeGetattrer = (*quoteNode)(nil)
	_ gofs.NodeSetattrer = (*quoteNode)(nil)
	_ gofs.FileReader    = (*quoteHandle)(nil)
	_ gofs.FileWriter    = (*quoteHandle)(nil)
)

// quoteNode is integrity/ima/quote. The file is in every caller's tree (the
// tree is the same for everyone); opening it needs the policy's privilege
// (root with CAP_SYS_ADMIN in the container's user namespace: EACCES
// otherwise) and a vTPM for the caller's namespace (ENODEV otherwise: no
// --vtpm, or the host). The namespace is bound at open. Protocol, on one
// O_RDWR descriptor: write the verifier's nonce in hex (one write; a
// trailing newline is ignored), then read the JSON bundle (vtpm.Bundle) of
// the namespace's vTPM for that nonce: it starts where the write ended (so a
// plain read on the same descriptor gets it) and also at offset 0 for
// pread/pwrite users. A read before any write
// is EINVAL; a bad nonce is EINVAL at the write; a failed quote EIO.
//
//	exec 3<>/sys/kernel/security/ima/quote; echo $NONCE >&3; cat <&3
type quoteNode struct {
	gofs.Inode
	root *Root
}

type quoteHandle struct {
	root *Root
	ns   *imans.Namespace

	mu     sync.Mutex
	bundle []byte
	base   int64 // file offset after the nonce's write: where the bundle starts
}

// Getattr implements fs.NodeGetattrer. The size is not 0 (see sizeFor: a
// sendfile must fail over to read(2) instead of reading nothing).
func (n *quoteNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.root.setAttr(&out.Attr, syscall.S_IFREG|modeQuote)
	out.Size = unknownSize
	return 0
}

// Setattr implements fs.NodeSetattrer: only the truncation to 0 of a
// shell's `>` redirection, which changes nothing.
func (n *quoteNode) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := n.root.truncateOnly(ctx, in, "truncate quote"); errno != 0 {
		return errno
	}
	return n.Getattr(ctx, fh, out)
}

// Open implements fs.NodeOpener.
func (n *quoteNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	_, ns, errno := n.root.authorize(ctx, "open quote")
	if errno != 0 {
		return nil, 0, errno
	}
	if n.root.opts.Quoter == nil || ns.IsHost() {
		return nil, 0, syscall.ENODEV
	}
	return &quoteHandle{root: n.root, ns: ns}, fuse.FOPEN_DIRECT_IO, 0
}

// Write implements fs.FileWriter: the nonce; the quote is taken now.
func (h *quoteHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	text := strings.TrimSpace(string(data))
	if len(text) == 0 || len(text) > maxNonceHex {
		return 0, syscall.EINVAL
	}
	nonce, err := hex.DecodeString(text)
	if err != nil {
		return 0, syscall.EINVAL
	}
	bundle, err := h.root.opts.Quoter(h.ns, nonce)
	if errors.Is(err, ErrNoVTPM) {
		return 0, syscall.ENODEV
	}
	if err != nil {
		h.root.log.WithError(err).WithFields(logrus.Fields{"ns": h.ns.ID}).Warn("quote from inside the container")
		return 0, syscall.EIO
	}
	h.mu.Lock()
	h.bundle = bundle
	h.base = off + int64(len(data))
	h.mu.Unlock()
	return uint32(len(data)), 0
}

// Read implements fs.FileReader: the bundle of the last nonce written.
func (h *quoteHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	b, base := h.bundle, h.base
	h.mu.Unlock()
	if off < 0 || b == nil {
		return nil, syscall.EINVAL
	}
	if off >= base {
		off -= base // read on from the write's position (one shared offset)
	}
	if off >= int64(len(b)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, b[off:])
	return fuse.ReadResultData(dest[:n]), 0
}
