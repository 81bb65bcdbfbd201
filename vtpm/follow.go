package vtpm

import (
	"context"
	"fmt"
)

// WaitingSource is an EntrySource that can wait for growth, as
// *measurelog.List does: Wait returns when Len() > n or ctx ends.
type WaitingSource interface {
	EntrySource
	Wait(ctx context.Context, n int) error
}

// CatchUp extends the entries of SWTPMOptions.List the TPM does not hold
// yet (from Extended() to List.Len()), in list order, and returns how many
// it extended. On a freshly started swtpm it replays the whole list, like
// Resync(all entries), and marks the TPM synced.
//
// CatchUp and Follow drive the TPM from the list by position; Extend
// drives it entry by entry. Use one way per SWTPM, never both: an entry
// both extended and caught up would be counted twice.
func (s *SWTPM) CatchUp() (int, error) {
	if s.opts.List == nil {
		return 0, fmt.Errorf("catch up vtpm %q: no measurement list configured", s.opts.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		if s.extended != 0 {
			return 0, fmt.Errorf("catch up vtpm %q: %w", s.opts.ID, ErrNotSynced)
		}
		// Fresh TPM: its PCRs are zero, the replay of no entries.
		s.synced = true
	}
	n := 0
	for s.extended < s.opts.List.Len() {
		e := s.opts.List.Entry(s.extended)
		if e == nil {
			return n, fmt.Errorf("catch up vtpm %q: list entry %d missing", s.opts.ID, s.extended)
		}
		if e.PCR > maxPCR {
			return n, fmt.Errorf("catch up vtpm %q: entry %d: PCR %d out of range", s.opts.ID, s.extended, e.PCR)
		}
		if err := s.tpm.Extend(e); err != nil {
			return n, fmt.Errorf("catch up vtpm %q: entry %d: %w", s.opts.ID, s.extended, err)
		}
		s.extended++
		s.touched[int(e.PCR)] = true
		n++
	}
	return n, nil
}

// Follow keeps the TPM up with a growing list until ctx ends or the TPM
// fails: it catches up, waits for the list to grow, and again. It takes
// extending off the measurement's critical path (one extend is a round
// trip to swtpm, ~0.2 ms); a quote then covers every entry Follow has
// extended so far, which is always a prefix of the list, so bundles stay
// verifiable while entries stream in. It returns ctx's error on
// cancellation.
func (s *SWTPM) Follow(ctx context.Context, list WaitingSource) error {
	if list != EntrySource(s.opts.List) {
		return fmt.Errorf("follow vtpm %q: list is not SWTPMOptions.List", s.opts.ID)
	}
	for {
		if _, err := s.CatchUp(); err != nil {
			return err
		}
		if err := list.Wait(ctx, s.Extended()); err != nil {
			return err
		}
	}
}
