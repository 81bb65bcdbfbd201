package vtpm

import (
	"fmt"

	"github.com/imafs/imafs/measurelog"
)

// BootAggregate computes IMA's boot_aggregate from the TPM's PCRs the way
// the kernel does (security/integrity/ima/ima_crypto.c,
// ima_calc_boot_aggregate_tfm, Linux 6.12): the hash, with algo, of the
// concatenated values of PCRs 0-7 read from algo's bank, and for any bank
// but sha1 also PCRs 8-9 (kernel command line and image in a typical
// allocation; "only included in non-SHA1 boot_aggregate digests to avoid
// ambiguity").
func BootAggregate(t *TPM, algo measurelog.Algo) ([]byte, error) {
	last := 9
	if algo == measurelog.SHA1 {
		last = 7
	}
	indexes := make([]int, 0, last+1)
	for i := 0; i <= last; i++ {
		indexes = append(indexes, i)
	}
	vals, err := t.ReadPCRs(algo, indexes)
	if err != nil {
		return nil, fmt.Errorf("boot_aggregate (%s): %w", algo, err)
	}
	h := algo.New()
	for _, i := range indexes {
		h.Write(vals[i])
	}
	return h.Sum(nil), nil
}

// KernelBootAggregate chooses the bank as the kernel's
// ima_calc_boot_aggregate does, then computes BootAggregate on it: the bank
// of the preferred algorithm (IMA's configured hash) if the TPM has it
// allocated, else sha256, else sha1. It returns the bank used, which is
// the algorithm of the boot_aggregate entry's digest.
func KernelBootAggregate(t *TPM, preferred measurelog.Algo) (measurelog.Algo, []byte, error) {
	banks, err := t.AllocatedBanks()
	if err != nil {
		return 0, nil, fmt.Errorf("boot_aggregate: %w", err)
	}
	has := map[measurelog.Algo]bool{}
	for _, b := range banks {
		for _, a := range []measurelog.Algo{measurelog.SHA1, measurelog.SHA256, measurelog.SHA384, measurelog.SHA512} {
			if alg, err := tpmAlg(a); err == nil && alg == b {
				has[a] = true
			}
		}
	}
	var bank measurelog.Algo
	switch {
	case has[preferred]:
		bank = preferred
	case has[measurelog.SHA256]:
		bank = measurelog.SHA256
	case has[measurelog.SHA1]:
		bank = measurelog.SHA1
	default:
		return 0, nil, fmt.Errorf("boot_aggregate: tpm %s has no suitable PCR bank (has %v)", t.Path(), banks)
	}
	d, err := BootAggregate(t, bank)
	if err != nil {
		return 0, nil, err
	}
	return bank, d, nil
}
