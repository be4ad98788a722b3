package virtio

import (
	"encoding/binary"
	"fmt"
)

// Operations for a device whose one request spans several chains:
// virtio-net's mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF), where a
// frame is spread over as many available chains as it needs and the first
// buffer's header says how many (num_buffers). Three things differ from the
// one-chain-per-request loop of Drain:
//
//   - the device may find, half-way through, that the driver has not made
//     enough buffers available; it must give back the chains it took
//     (Unpop, vhost's vhost_discard_vq_desc, QEMU's virtqueue_unpop) and
//     wait;
//   - it waits for the driver to add buffers although some are available
//     (EnableNotifyAt), where EnableNotify would report them and never
//     let it sleep;
//   - the used elements of one frame must become visible to the driver
//     together (PushBatch, vhost_add_used_n): Linux reads num_buffers from
//     the first element and fails the frame if the others are not in the
//     used ring yet.

// Used is one used-ring element: a chain head and the bytes written to it.
type Used struct {
	Head    uint16
	Written uint32
}

// Unpop returns the last n chains taken with Pop and not yet pushed to the
// available ring: the next Pop returns them again.
func (q *Queue) Unpop(n uint16) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.active {
		return fmt.Errorf("queue %d: %w", q.index, ErrQueueNotReady)
	}
	if outstanding := q.lastAvail - q.usedIdx; n > outstanding {
		// A device model bug, not something a guest can cause.
		return fmt.Errorf("queue %d: unpop of %d chains with %d outstanding", q.index, n, outstanding)
	}
	q.lastAvail -= n
	return nil
}

// PushBatch returns several chains to the driver at once: every used
// element is written before the used index moves, by len(elems), in one
// store.
func (q *Queue) PushBatch(elems []Used) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.active {
		return fmt.Errorf("queue %d: %w", q.index, ErrQueueNotReady)
	}
	if outstanding := q.lastAvail - q.usedIdx; len(elems) > int(outstanding) {
		return fmt.Errorf("queue %d: push of %d chains with %d outstanding", q.index, len(elems), outstanding)
	}
	if len(elems) == 0 {
		return nil
	}
	idx := q.usedIdx
	for _, e := range elems {
		slot := ringHeader + usedElemSize*int(idx&(q.size-1))
		binary.LittleEndian.PutUint32(q.used[slot:], uint32(e.Head))
		binary.LittleEndian.PutUint32(q.used[slot+4:], e.Written)
		idx++
	}
	q.usedIdx = idx
	q.storeUsed()
	q.pushed = true
	return nil
}

// EnableNotifyAt asks the driver to notify once its available index moves
// past seen, the index the caller last saw (AvailIdx when Pop found the
// ring empty, before any Unpop), and reports whether it already has: then
// the caller must look again instead of waiting. EnableNotify is
// EnableNotifyAt(AvailIdx()) for a device that consumed everything.
func (q *Queue) EnableNotifyAt(seen uint16) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.active || q.owner.broken() || !q.owner.dmaAllowed() {
		return false
	}
	if q.eventIdx {
		binary.LittleEndian.PutUint16(q.used[ringHeader+usedElemSize*int(q.size):], seen)
	} else if q.usedFlags&UsedFNoNotify != 0 {
		q.usedFlags &^= UsedFNoNotify
		q.storeUsed()
	}
	q.fence()
	return q.loadAvailIdx() != seen
}
