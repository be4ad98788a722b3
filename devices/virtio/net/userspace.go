package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/vhost"
)

// userPath is the userspace backend: per queue pair, a transmit worker on
// the transmit queue's kick and, for the pairs in use, a receive worker on
// the tap queue.
type userPath struct {
	s     *session
	pairs []*userPair
	tx    *virtio.Workers
}

// userPair moves frames between one queue pair and one host queue.
type userPair struct {
	s        *session
	idx      int
	port     Port
	rxq, txq *virtio.Queue

	// Transmit worker state.
	txChain virtio.Chain
	txBuf   []byte

	// Receive worker state; rxOn and rxDone are changed under s.mu.
	rxOn   bool
	rxStop atomic.Bool
	rxDone chan struct{}
	rxBuf  []byte
	chains []virtio.Chain
	used   []virtio.Used
}

// Transmit queues are served for every pair the driver enabled, in use or
// not: a driver that shrinks the pairs still expects the frames it queued
// before to complete.
func newUserPath(s *session) *userPath {
	p := &userPath{s: s}
	var srcs []virtio.Source
	for i := 0; i < s.pairs; i++ {
		up := &userPair{s: s, idx: i, port: s.d.ports[i], rxq: s.rx[i], txq: s.tx[i]}
		p.pairs = append(p.pairs, up)
		if up.txq != nil {
			up.txBuf = make([]byte, MaxFrameLen)
			srcs = append(srcs, virtio.QueueSource(up.txq, up.handleTx))
		}
	}
	p.tx = virtio.StartWorkers(s.d.log, srcs...)
	return p
}

func (p *userPath) setPairs(n int) error {
	for i, up := range p.pairs {
		if i < n {
			up.startRx()
		} else {
			up.stopRx()
		}
	}
	return nil
}

// vectorChanged: the transport reads each queue's vector when it
// interrupts, so there is nothing to re-wire.
func (p *userPath) vectorChanged() error { return nil }

func (p *userPath) stop() {
	p.tx.Stop()
	for _, up := range p.pairs {
		up.stopRx()
	}
}

// Transmit.

func (up *userPair) handleTx(q *virtio.Queue) {
	_ = q.Drain(&up.txChain, up.transmit)
}

// transmit sends one chain as one frame: the virtio header and the frame
// are the chain's readable bytes, in any split over descriptors, and go to
// the tap as they are (it parses the header: checksum and segmentation
// requests, HOST_TSO/UFO). A frame the tap cannot take is dropped, not a
// device error: the guest's stack counts it like a lost packet.
func (up *userPair) transmit(c *virtio.Chain) (uint32, error) {
	d := up.s.d
	n := c.ReadLen
	if n < HdrLen+ethHdrLen || n > uint32(len(up.txBuf)) {
		d.m.txDropped.Add(1)
		d.warn.Warn("virtio-net: dropping a transmit chain of a size no frame has", "pair", up.idx, "len", n)
		return 0, nil
	}
	frame := up.txBuf[:n]
	if _, err := io.ReadFull(c.NewReader(up.s.mem), frame); err != nil {
		return 0, fmt.Errorf("reading a transmit chain: %w", err)
	}
	if _, err := up.port.Write(frame); err != nil {
		d.m.txDropped.Add(1)
		d.warn.Warn("virtio-net: the host refused a frame", "pair", up.idx, "len", n, "err", err)
		return 0, nil
	}
	d.m.txFrames.Add(1)
	d.m.txBytes.Add(uint64(n - HdrLen))
	return 0, nil
}

// Receive.

// startRx starts the pair's receive worker (s.mu held).
func (up *userPair) startRx() {
	if up.rxOn || up.rxq == nil {
		return
	}
	if up.rxBuf == nil {
		up.rxBuf = make([]byte, MaxFrameLen)
	}
	up.rxOn = true
	up.rxStop.Store(false)
	up.rxDone = make(chan struct{})
	go up.rxLoop(up.rxDone)
}

// stopRx ends the receive worker and returns when it has: the blocked tap
// read and the wait for buffers are both cut short by deadlines, so no
// descriptor is closed and both can be waited on again after a reset.
func (up *userPair) stopRx() {
	if !up.rxOn {
		return
	}
	up.rxStop.Store(true)
	_ = up.port.SetReadDeadline(time.Unix(1, 0))
	up.rxq.Kick().Interrupt()
	<-up.rxDone
	_ = up.port.SetReadDeadline(time.Time{})
	up.rxq.Kick().Rearm()
	up.rxOn = false
}

func (up *userPair) rxLoop(done chan struct{}) {
	defer close(done)
	d := up.s.d
	for !up.rxStop.Load() {
		n, err := up.port.Read(up.rxBuf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // stopRx, or a deadline left over: the loop condition decides
		}
		if err != nil {
			// A tap that fails once (removed under us, a detached
			// queue) fails again: stop rather than spin on it.
			d.m.rxHostErrors.Add(1)
			d.warn.Error("virtio-net: reading the host queue failed; receive stops until the driver resets the device",
				"pair", up.idx, "err", err)
			return
		}
		if !up.deliver(up.rxBuf[:n]) {
			return
		}
	}
}

// rxResult is what one attempt to place a frame came to.
type rxResult int

const (
	rxPlaced  rxResult = iota // in the guest's buffers, used ring updated
	rxDropped                 // discarded (counted)
	rxNoRoom                  // not enough buffers: wait for the driver
	rxBroken                  // the device needs a reset
)

// deliver places one frame, waiting as long as it takes for the driver to
// post enough receive buffers; the tap is not read meanwhile, so the host
// queues (and eventually drops) frames instead of kvmm. It returns false
// when the worker must end (stop, or a broken device).
func (up *userPair) deliver(frame []byte) bool {
	d := up.s.d
	for {
		res, seen := up.place(frame)
		switch res {
		case rxPlaced, rxDropped:
			return true
		case rxBroken:
			return false
		}
		if up.rxStop.Load() {
			return false
		}
		if up.rxq.EnableNotifyAt(seen) {
			continue // buffers arrived meanwhile
		}
		d.m.rxWaits.Add(1)
		// Returns on the driver's next notification of this queue, or
		// at once after stopRx's Interrupt.
		if err := up.rxq.Kick().Wait(); err != nil && !up.rxStop.Load() {
			d.warn.Error("virtio-net: waiting for receive buffers failed; receive stops", "pair", up.idx, "err", err)
			return false
		}
	}
}

// place puts frame (virtio header first) into available receive chains:
// one chain, or with MRG_RXBUF as many as it takes, their count written
// into the header's num_buffers and their used elements published
// together. On rxNoRoom the chains taken are given back and seen is the
// available index that was found short.
func (up *userPair) place(frame []byte) (rxResult, uint16) {
	d, q := up.s.d, up.rxq
	if len(frame) < HdrLen+ethHdrLen || !up.acceptable(frame[:HdrLen]) {
		d.m.rxDropped.Add(1)
		return rxDropped, 0
	}
	mrg := up.s.features&FeatureMrgRxbuf != 0
	need := uint32(len(frame))
	var room uint32
	k := 0
	for room < need {
		if k == len(up.chains) {
			up.chains = append(up.chains, virtio.Chain{})
		}
		c := &up.chains[k]
		ok, err := q.Pop(c)
		if err != nil {
			return rxBroken, 0 // the queue has already set DEVICE_NEEDS_RESET
		}
		if !ok {
			seen := q.AvailIdx()
			if err := q.Unpop(uint16(k)); err != nil {
				q.Fail(err)
				return rxBroken, 0
			}
			if k > 0 && k >= int(q.Size()) {
				// Every descriptor of the ring is a buffer and they
				// still cannot hold the frame: waiting would be forever.
				d.m.rxDropped.Add(1)
				d.warn.Warn("virtio-net: dropping a frame larger than the whole receive ring", "pair", up.idx, "len", need)
				return rxDropped, 0
			}
			return rxNoRoom, seen
		}
		k++
		if len(c.Readable()) > 0 {
			q.Fail(fmt.Errorf("receive chain %d has device-readable buffers", c.Head))
			return rxBroken, 0
		}
		if !mrg {
			if c.WriteLen < need {
				// Without MRG_RXBUF a frame must fit one chain; this
				// one is handed back empty, which Linux counts as a
				// length error and refills.
				d.m.rxDropped.Add(1)
				d.warn.Warn("virtio-net: dropping a frame larger than the receive buffer", "pair", up.idx, "len", need, "room", c.WriteLen)
				if err := q.Push(c.Head, 0); err != nil {
					q.Fail(err)
					return rxBroken, 0
				}
				q.Notify()
				return rxDropped, 0
			}
			break
		}
		if k == 1 && c.WriteLen < HdrLen {
			q.Fail(fmt.Errorf("mergeable receive buffer %d of %d bytes cannot hold the %d-byte header", c.Head, c.WriteLen, HdrLen))
			return rxBroken, 0
		}
		room += c.WriteLen
	}
	// The tun driver leaves num_buffers alone (vhost.VnetHdr); it is the
	// device's to write, and 1 without MRG_RXBUF.
	binary.LittleEndian.PutUint16(frame[hdrNumBuffersOff:], uint16(k))
	up.used = up.used[:0]
	off := uint32(0)
	for i := 0; i < k; i++ {
		c := &up.chains[i]
		take := min(need-off, c.WriteLen)
		if _, err := c.NewWriter(up.s.mem).Write(frame[off : off+take]); err != nil {
			q.Fail(fmt.Errorf("writing receive chain %d: %w", c.Head, err))
			return rxBroken, 0
		}
		up.used = append(up.used, virtio.Used{Head: c.Head, Written: take})
		off += take
	}
	if err := q.PushBatch(up.used); err != nil {
		q.Fail(err)
		return rxBroken, 0
	}
	q.Notify()
	d.m.rxFrames.Add(1)
	d.m.rxBytes.Add(uint64(need - HdrLen))
	return rxPlaced, 0
}

// acceptable checks a received frame's header against the offloads the
// driver accepted (spec §5.1.6.4.1): a partial checksum only with
// GUEST_CSUM, segmentation only of the kinds it takes. The tap is set up
// to produce nothing else, but a frame it queued before a reset or a
// GUEST_OFFLOADS_SET may.
func (up *userPair) acceptable(hdr []byte) bool {
	off := up.s.offloads.Load()
	flags, gso := hdr[hdrFlagsOff], hdr[hdrGSOTypeOff]
	if off&FeatureGuestCsum == 0 {
		if flags&vhost.VnetHdrFNeedsCsum != 0 {
			return false
		}
		// DATA_VALID needs GUEST_CSUM too; without it flags must be 0.
		hdr[hdrFlagsOff] = 0
	}
	if gso&vhost.VnetHdrGSOECN != 0 && off&FeatureGuestECN == 0 {
		return false
	}
	switch gso &^ vhost.VnetHdrGSOECN {
	case vhost.VnetHdrGSONone:
		return true
	case vhost.VnetHdrGSOTCPv4:
		return off&FeatureGuestTSO4 != 0
	case vhost.VnetHdrGSOTCPv6:
		return off&FeatureGuestTSO6 != 0
	case vhost.VnetHdrGSOUDP:
		return off&FeatureGuestUFO != 0
	}
	return false
}
