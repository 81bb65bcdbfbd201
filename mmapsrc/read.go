package mmapsrc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/sirupsen/logrus"
)

// readLoop turns ring buffer records into Events. It blocks while the
// Events channel is full: the ring buffer then fills and the kernel counts
// what it cannot report.
func (s *Source) readLoop() {
	defer s.wg.Done()
	var rec ringbuf.Record
	for {
		if err := s.rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			s.log.WithError(err).Error("mmap source: read ring buffer")
			continue
		}
		ev, resolve, err := s.decode(rec.RawSample)
		if err != nil {
			s.log.WithError(err).WithField("bytes", len(rec.RawSample)).Error("mmap source: short record")
			continue
		}
		if resolve {
			s.resolve(&ev)
		}
		s.reported.Add(1)
		if ev.Err != nil {
			s.unresolved.Add(1)
			s.log.WithFields(logrus.Fields{"pid": ev.Pid, "dev": ev.Dev, "ino": ev.Ino, "mntns": ev.MntNS}).
				WithError(ev.Err).Warn("mmap source: mapped file not opened")
		}
		if !s.send(s.ctx, ev) {
			return
		}
	}
}

// decode turns a ring buffer record into an Event, and says whether the
// mapped file must be opened (resolve).
func (s *Source) decode(raw []byte) (Event, bool, error) {
	if s.mech == MechanismLSM {
		var r lsmLsmEvent
		if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &r); err != nil {
			return Event{}, false, err
		}
		ev, resolve := lsmEvent(&r)
		if ev.DigestAlgo != "" && !s.algoFromCmdline {
			s.kernelAlgo.Store(ev.DigestAlgo)
		}
		return ev, resolve, nil
	}
	var r mmapEvent
	if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &r); err != nil {
		return Event{}, false, err
	}
	return s.event(&r), true, nil
}

func (s *Source) event(r *mmapEvent) Event {
	return Event{
		Kind:  Kind(r.Kind),
		Pid:   int(r.Pid),
		Tid:   int(r.Tid),
		PidNS: uint64(r.Pidns),
		MntNS: uint64(r.Key.Mntns),
		Dev:   userDev(r.Key.Dev),
		Ino:   r.Key.Ino,
		Stamp: Stamp{
			Size:  r.Stamp.Size,
			Mtime: time.Unix(r.Stamp.MtimeSec, int64(r.Stamp.MtimeNsec)),
			Ctime: time.Unix(r.Stamp.CtimeSec, int64(r.Stamp.CtimeNsec)),
		},
		Addr: r.Addr,
		Len:  r.Len,
		Prot: r.Prot,
		Fd:   int(r.Fd),
	}
}

// send delivers ev unless ctx ends first (then ev's file is closed).
func (s *Source) send(ctx context.Context, ev Event) bool {
	select {
	case s.events <- ev:
		return true
	case <-ctx.Done():
		if ev.File != nil {
			ev.File.Close()
		}
		return false
	}
}

// lostLoop reports the kernel's lost counters every LostPoll.
func (s *Source) lostLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.LostPoll)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.reportLost(s.ctx, false)
		}
	}
}

// reportLost sends one Lost event per mount namespace whose counter grew.
// At close (final) it does not block on a full channel; what it cannot
// send is logged.
func (s *Source) reportLost(ctx context.Context, final bool) {
	s.lostMu.Lock()
	defer s.lostMu.Unlock()
	var mntns uint32
	var n uint64
	var out []Event
	it := s.maps.lost.Iterate()
	for it.Next(&mntns, &n) {
		if n > s.lostSeen[mntns] {
			out = append(out, Event{Kind: Lost, MntNS: uint64(mntns), Count: n - s.lostSeen[mntns], Fd: -1})
			s.lostSeen[mntns] = n
		}
	}
	if err := it.Err(); err != nil {
		s.log.WithError(err).Error("mmap source: read lost counters")
	}
	for _, ev := range out {
		s.log.WithFields(logrus.Fields{"mntns": ev.MntNS, "count": ev.Count}).Warn("mmap source: executable mappings not reported")
		if final {
			select {
			case s.events <- ev:
			default:
			}
			continue
		}
		if !s.send(ctx, ev) {
			return
		}
	}
}
