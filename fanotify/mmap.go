package fanotify

import (
	"slices"

	"github.com/imafs/imafs/appraise"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// MmapAppraiser (Options.Mmap) enforces `appraise func=MMAP_CHECK` (and
// MMAP_CHECK_REQPROT) together with a mechanism that refuses executable
// mappings of files not verified (the mmap source's BPF LSM, package
// mmapsrc): a file is opened before it is mapped (ld.so opens each library,
// execve its binary), so the engine appraises, at that open and before it
// returns, every file the container's policy appraises for MMAP_CHECK, and
// passes the digests of those that verify. See docs/mmap-source.md.
type MmapAppraiser interface {
	// Enforces reports whether the executable mappings of ns's tasks are
	// refused unless Verified. The engine appraises for MMAP_CHECK only
	// then; call Engine.Invalidate when it becomes true.
	Enforces(ns *imans.Namespace) bool
	// KernelAlgo is the algorithm the kernel hashes mapped files in.
	KernelAlgo() measurelog.Algo
	// Verified: the file (dev, ino) of ns passed appraisal for
	// MMAP_CHECK; each (algos[i], digests[i]) may be mapped. False when it
	// could not be passed on (the engine appraises the file again at its
	// next open).
	Verified(ns *imans.Namespace, dev, ino uint64, algos []measurelog.Algo, digests [][]byte) bool
	// Failed: the file (dev, ino) of ns failed appraisal for MMAP_CHECK
	// with cause (appraise.Cause); its mappings will be refused.
	Failed(ns *imans.Namespace, dev, ino uint64, cause string)
	// Invalidated: ns's policy or keys changed; what was Verified before no
	// longer holds.
	Invalidated(ns *imans.Namespace)
}

// mmapFuncs are the hooks of an executable mapping, in the kernel's order.
var mmapFuncs = []policy.Func{policy.MMAPCheckReqprot, policy.MMAPCheck}

// appraisesMmap reports whether p appraises executable mappings.
func appraisesMmap(p policy.Policy) bool {
	for _, fn := range mmapFuncs {
		if p.Uses(fn, policy.Appraise) {
			return true
		}
	}
	return false
}

// matchMmap decides whether this open must also appraise the file for
// its executable mappings: the policy's MMAP_CHECK(_REQPROT) decision for
// the same file and task with MAY_EXEC (ima_file_mmap). Both hooks'
// requirements are combined: a mapping passes only when both do.
func (w *watch) matchMmap(p *plan) {
	m := w.e.opts.Mmap
	if m == nil || p.twin || p.fn == policy.FileCheck && p.mask&policy.MayRead == 0 {
		return // mmap needs a descriptor open for read: a write-only open maps nothing
	}
	if !p.mmapAppr || !m.Enforces(w.ns) { // read with the policy by match
		return
	}
	p.independent = p.independent && p.mmapIndep
	pev := p.pev
	pev.Mask = policy.MayExec
	for _, fn := range mmapFuncs {
		pev.Func = fn
		d := p.pol.Match(pev)
		if d.Actions&policy.Appraise == 0 {
			continue
		}
		p.mmap = true
		if d.AppraiseType != "" && d.AppraiseType != "modsig" {
			p.mmapReq.Signature = true
		}
		if len(d.AppraiseAlgos) > 0 {
			p.mmapReq.Algos = append(p.mmapReq.Algos, d.AppraiseAlgos...)
		}
	}
}

// mmapAlgos adds to algos what the MMAP_CHECK appraisal needs hashed: the
// algorithm security.ima names (to verify) and the kernel's (to allow).
func (w *watch) mmapAlgos(c *collected, algos []measurelog.Algo) []measurelog.Algo {
	out := slices.Clone(algos)
	if c.xv != nil {
		if a, err := c.xv.HashAlgo(); err == nil && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if a := w.e.opts.Mmap.KernelAlgo(); !slices.Contains(out, a) {
		out = append(out, a)
	}
	return out
}

// appraiseMmap verifies the file for MMAP_CHECK and passes its digests on
// when it verifies. The result is cached for this version of the file
// (settled) unless it could not be passed on, or the file changed while
// hashed, or the policy or keys changed since the plan (its generation).
func (w *watch) appraiseMmap(p *plan, c *collected) (settled bool) {
	m := w.e.opts.Mmap
	var aerr error
	if c.xerr != nil {
		aerr = &appraise.Error{Cause: appraise.CauseInvalidXattr, Err: c.xerr}
	} else if keys, kerr := w.keyring(); kerr != nil {
		aerr = &appraise.Error{Cause: appraise.CauseUnknownError, Err: kerr}
	} else {
		digest := c.digest
		if a, err := c.xv.HashAlgo(); err == nil {
			digest = digestIn(c.allAlgos, c.allDigests, a)
		}
		aerr = appraise.Verify(c.xv, digest, keys, p.mmapReq)
	}
	if c.changed {
		return false // what was hashed may not be what is mapped: the next open tries again
	}
	log := p.log.WithField("hook", "MMAP_CHECK")
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gen != p.gen || w.closed {
		return false
	}
	if aerr != nil {
		cause := string(appraise.CauseOf(aerr))
		m.Failed(w.ns, p.st.Dev, p.st.Ino, cause)
		log.WithField("cause", cause).WithError(aerr).Debug("fanotify: appraisal for executable mappings failed: mapping the file will be refused")
	} else if !m.Verified(w.ns, p.st.Dev, p.st.Ino, c.allAlgos, c.allDigests) {
		log.Warn("fanotify: appraisal for executable mappings passed but could not be passed on: mapping the file will be refused")
		return false
	}
	p.file.update(func(fs *fileState) { fs.mmapChecked = true })
	return true
}

// digestIn returns the digest of algo among digests (nil if absent).
func digestIn(algos []measurelog.Algo, digests [][]byte, algo measurelog.Algo) []byte {
	if i := slices.Index(algos, algo); i >= 0 && i < len(digests) {
		return digests[i]
	}
	return nil
}

// Invalidate drops ns's cached decisions and ignore marks, so that every
// file is evaluated again at its next open (e.g. when its executable
// mappings become appraised: MmapAppraiser.Enforces turned true).
func (e *Engine) Invalidate(ns *imans.Namespace) {
	e.mu.Lock()
	w := e.watches[ns.ID]
	e.mu.Unlock()
	if w == nil || w.ns != ns {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.invalidateLocked("executable mappings appraised")
	}
}
