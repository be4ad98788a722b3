package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/kvmm/kvmm/memory"
)

// Errors of the queue operations.
var (
	// ErrBadRing: the driver's ring state makes no sense (an available
	// index that jumped by more than the queue size).
	ErrBadRing = errors.New("malformed virtqueue")
	// ErrBadLayout: the ring addresses or size the driver programmed
	// cannot be used (misaligned, not RAM, not a power of two).
	ErrBadLayout = errors.New("unusable virtqueue layout")
	// ErrDeviceBroken: the device set DEVICE_NEEDS_RESET and does not
	// process buffers until the driver resets it.
	ErrDeviceBroken = errors.New("device needs reset")
	// ErrQueueNotReady: the queue is not active (not enabled, or the
	// device is not DRIVER_OK).
	ErrQueueNotReady = errors.New("virtqueue not ready")
)

// queueOwner is what a queue needs from its transport.
type queueOwner interface {
	// broken reports DEVICE_NEEDS_RESET.
	broken() bool
	// fail sets DEVICE_NEEDS_RESET because of err.
	fail(q *Queue, err error)
	// interrupt sends a used-buffer notification for q.
	interrupt(q *Queue)
	// dmaAllowed reports whether the function may access guest memory
	// (PCI bus mastering).
	dmaAllowed() bool
}

// RingLayout is where the driver placed a split virtqueue: guest-physical
// addresses of the descriptor table, the driver (available) ring and the
// device (used) ring, and the queue size it chose. vhost translates these
// with memory.Guest into host addresses for VHOST_SET_VRING_ADDR.
type RingLayout struct {
	Size                 uint16
	Desc, Driver, Device uint64
}

// Queue is one split virtqueue of a device (spec §2.7): the driver's
// configuration from the common configuration registers, and once the
// device is active, the device side of the rings in guest memory.
//
// A device model uses Pop, Push, Notify and EnableNotify (or Drain, which
// combines them) from one goroutine per queue; the methods are also safe
// to call from several goroutines.
type Queue struct {
	index   int
	maxSize uint16
	kick    *EventFD
	owner   queueOwner

	// Driver-programmed state: written under the transport's lock while
	// the device is not active, read at activation.
	size    uint16
	enabled bool
	layout  RingLayout
	vector  atomic.Uint32

	mu       sync.Mutex
	active   bool
	mem      *memory.Guest
	descTab  []byte
	avail    []byte
	used     []byte
	eventIdx bool
	indirect bool
	// lastAvail is the next available-ring entry to consume, usedIdx the
	// next used-ring slot; signalled is the used index at the last
	// interrupt decision (vhost's signalled_used).
	lastAvail, usedIdx, signalled uint16
	signalledValid                bool
	pushed                        bool // Push since the last Notify
	usedFlags                     uint16
	fenceWord                     uint32
}

func newQueue(index int, maxSize uint16, owner queueOwner) (*Queue, error) {
	if maxSize == 0 || maxSize > MaxQueueSize || bits.OnesCount16(maxSize) != 1 {
		return nil, fmt.Errorf("queue %d: maximum size %d must be a power of two up to %d", index, maxSize, MaxQueueSize)
	}
	kick, err := NewEventFD()
	if err != nil {
		return nil, fmt.Errorf("queue %d: %w", index, err)
	}
	q := &Queue{index: index, maxSize: maxSize, kick: kick, owner: owner}
	q.resetDriverState()
	return q, nil
}

// resetDriverState puts the registers back to their reset values (spec
// §4.1.4.3: queue_size reads as the maximum until the driver writes it).
func (q *Queue) resetDriverState() {
	q.size, q.enabled, q.layout = q.maxSize, false, RingLayout{}
	q.vector.Store(NoVector)
}

// Index is the queue's number.
func (q *Queue) Index() int { return q.index }

// MaxSize is the largest size the device offers.
func (q *Queue) MaxSize() uint16 { return q.maxSize }

// Kick is the eventfd signalled on each driver notification: the worker
// waits on it, and vhost takes its descriptor as the vring kick fd.
func (q *Queue) Kick() *EventFD { return q.kick }

// Vector is the MSI-X vector the driver chose for the queue (NoVector for
// none).
func (q *Queue) Vector() uint16 { return uint16(q.vector.Load()) }

// Ready reports whether the queue is active: enabled by the driver and
// the device set up (DRIVER_OK).
func (q *Queue) Ready() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.active
}

// Layout is the ring placement the driver programmed.
func (q *Queue) Layout() RingLayout {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.layout
	l.Size = q.size
	return l
}

// Size is the size the driver chose.
func (q *Queue) Size() uint16 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.size
}

// AvailIdx is the device's next available-ring index (vhost's
// VHOST_SET_VRING_BASE), UsedIdx the next used-ring index.
func (q *Queue) AvailIdx() uint16 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lastAvail
}

// UsedIdx: see AvailIdx.
func (q *Queue) UsedIdx() uint16 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.usedIdx
}

// ringBytes are the lengths of the three areas (spec §2.7, with the
// event fields when EVENT_IDX is negotiated).
func ringBytes(size uint16, eventIdx bool) (desc, avail, used uint64) {
	n := uint64(size)
	desc, avail, used = descSize*n, ringHeader+2*n, ringHeader+usedElemSize*n
	if eventIdx {
		avail += eventFieldLen
		used += eventFieldLen
	}
	return desc, avail, used
}

// checkLayout validates what the driver programmed against guest RAM.
func checkLayout(mem *memory.Guest, size, maxSize uint16, l RingLayout, eventIdx bool) error {
	if size == 0 || size > maxSize || bits.OnesCount16(size) != 1 {
		return fmt.Errorf("%w: size %d is not a power of two in 1..%d", ErrBadLayout, size, maxSize)
	}
	descLen, availLen, usedLen := ringBytes(size, eventIdx)
	for _, a := range []struct {
		what    string
		addr, n uint64
		align   uint64
	}{
		{"descriptor table", l.Desc, descLen, 16},
		{"driver ring", l.Driver, availLen, 2},
		{"device ring", l.Device, usedLen, 4},
	} {
		if a.addr%a.align != 0 {
			return fmt.Errorf("%w: %s at %#x is not %d-byte aligned", ErrBadLayout, a.what, a.addr, a.align)
		}
		if !mem.Contains(a.addr, a.n) {
			return fmt.Errorf("%w: %s [%#x, +%#x) is not guest RAM", ErrBadLayout, a.what, a.addr, a.n)
		}
	}
	return nil
}

// activate binds the queue to guest memory with the negotiated features.
func (q *Queue) activate(mem *memory.Guest, features uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	eventIdx := features&FeatureEventIdx != 0
	if err := checkLayout(mem, q.size, q.maxSize, q.layout, eventIdx); err != nil {
		return fmt.Errorf("queue %d: %w", q.index, err)
	}
	descLen, availLen, usedLen := ringBytes(q.size, eventIdx)
	// checkLayout proved these ranges are RAM; the slices alias it.
	q.descTab, _ = mem.Slice(q.layout.Desc, descLen)
	q.avail, _ = mem.Slice(q.layout.Driver, availLen)
	q.used, _ = mem.Slice(q.layout.Device, usedLen)
	q.mem, q.eventIdx, q.indirect = mem, eventIdx, features&FeatureIndirectDesc != 0
	q.lastAvail, q.usedIdx, q.signalled, q.signalledValid, q.pushed, q.usedFlags = 0, 0, 0, false, false, 0
	q.active = true
	return nil
}

// deactivate forgets the rings (device reset).
func (q *Queue) deactivate() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.active = false
	q.mem, q.descTab, q.avail, q.used = nil, nil, nil, nil
	q.lastAvail, q.usedIdx, q.signalled, q.signalledValid, q.pushed = 0, 0, 0, false, false
}

// Memory ordering. The driver on another CPU writes descriptors and ring
// entries, then the index (after a write barrier), and reads our used
// entries after our used index. The indices are read and written with
// 32-bit atomic operations on their aligned word, which keeps the
// compiler from moving other accesses across them and, on x86, are the
// locked or plain moves the protocol needs; fence() is a full barrier
// (LOCK-prefixed) for the store-then-load sequences of the event index
// protocol, where x86 itself may reorder.

// word32 is the aligned 32-bit word of guest memory at b[off:].
func word32(b []byte, off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&b[off]))
}

// loadAvailIdx reads avail->idx. The driver ring is only 2-byte aligned,
// so idx is either the high half of the word at offset 0 or the low half
// of the word at offset 2; both words lie inside the ring.
func (q *Queue) loadAvailIdx() uint16 {
	if uintptr(unsafe.Pointer(&q.avail[2]))%4 == 0 {
		return uint16(atomic.LoadUint32(word32(q.avail, 2)))
	}
	return uint16(atomic.LoadUint32(word32(q.avail, 0)) >> 16)
}

// storeUsed publishes used->flags and used->idx in one store; the device
// ring is 4-byte aligned and both fields are the device's.
func (q *Queue) storeUsed() {
	atomic.StoreUint32(word32(q.used, 0), uint32(q.usedFlags)|uint32(q.usedIdx)<<16)
}

func (q *Queue) fence() { atomic.AddUint32(&q.fenceWord, 1) }

// Pop takes the next available descriptor chain into c (reusing its
// buffer). It returns false when the ring is empty. A malformed ring or
// chain sets DEVICE_NEEDS_RESET and returns an error; so does every call
// after that until the driver resets the device.
func (q *Queue) Pop(c *Chain) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.active {
		return false, fmt.Errorf("queue %d: %w", q.index, ErrQueueNotReady)
	}
	if q.owner.broken() {
		return false, fmt.Errorf("queue %d: %w", q.index, ErrDeviceBroken)
	}
	if !q.owner.dmaAllowed() {
		return false, nil
	}
	availIdx := q.loadAvailIdx()
	pending := availIdx - q.lastAvail
	if pending == 0 {
		return false, nil
	}
	if pending > q.size {
		err := fmt.Errorf("%w: queue %d: available index moved from %d to %d, more than the queue size %d",
			ErrBadRing, q.index, q.lastAvail, availIdx, q.size)
		q.failLocked(err)
		return false, err
	}
	head := binary.LittleEndian.Uint16(q.avail[ringHeader+2*int(q.lastAvail&(q.size-1)):])
	q.lastAvail++
	if err := parseChain(q.mem, q.descTab, q.size, head, q.indirect, c); err != nil {
		err = fmt.Errorf("queue %d: %w", q.index, err)
		q.failLocked(err)
		return false, err
	}
	return true, nil
}

// failLocked reports err to the transport without holding q.mu across
// the call (the transport may take other queues' locks).
func (q *Queue) failLocked(err error) {
	q.mu.Unlock()
	q.owner.fail(q, err)
	q.mu.Lock()
}

// Push returns chain head to the driver with written bytes of
// device-writable data: the used element first, then the index.
func (q *Queue) Push(head uint16, written uint32) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.active {
		return fmt.Errorf("queue %d: %w", q.index, ErrQueueNotReady)
	}
	if q.usedIdx == q.lastAvail {
		// More completions than chains taken: a device model bug, not
		// something a guest can cause.
		return fmt.Errorf("queue %d: push of head %d with no chain outstanding", q.index, head)
	}
	slot := ringHeader + usedElemSize*int(q.usedIdx&(q.size-1))
	binary.LittleEndian.PutUint32(q.used[slot:], uint32(head))
	binary.LittleEndian.PutUint32(q.used[slot+4:], written)
	q.usedIdx++
	q.storeUsed()
	q.pushed = true
	return nil
}

// vringNeedEvent is the event index test (spec §2.7.10): notify when the
// index the other side asked about lies in (old, new].
func vringNeedEvent(event, newIdx, old uint16) bool {
	return newIdx-event-1 < newIdx-old
}

// NeedsInterrupt decides whether the used buffers pushed since the last
// call must be signalled: with EVENT_IDX when the used index passed the
// driver's used_event, else unless the driver set NO_INTERRUPT.
func (q *Queue) NeedsInterrupt() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.active || !q.pushed {
		return false
	}
	q.pushed = false
	// Our used index store must be visible before we read the driver's
	// suppression state, or both sides could decide not to notify.
	q.fence()
	if q.eventIdx {
		usedEvent := binary.LittleEndian.Uint16(q.avail[ringHeader+2*int(q.size):])
		old, valid := q.signalled, q.signalledValid
		q.signalled, q.signalledValid = q.usedIdx, true
		return !valid || vringNeedEvent(usedEvent, q.usedIdx, old)
	}
	return binary.LittleEndian.Uint16(q.avail[0:])&AvailFNoInterrupt == 0
}

// Notify sends the used-buffer notification if NeedsInterrupt says so.
func (q *Queue) Notify() {
	if q.NeedsInterrupt() {
		q.owner.interrupt(q)
	}
}

// EnableNotify asks the driver to notify on the next available buffer
// (avail_event with EVENT_IDX), then reports whether buffers arrived in
// the meantime: if so the caller must process them instead of waiting,
// or a notification suppressed by the old avail_event would be lost.
func (q *Queue) EnableNotify() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.active || q.owner.broken() || !q.owner.dmaAllowed() {
		return false
	}
	if q.eventIdx {
		binary.LittleEndian.PutUint16(q.used[ringHeader+usedElemSize*int(q.size):], q.lastAvail)
	} else if q.usedFlags&UsedFNoNotify != 0 {
		q.usedFlags &^= UsedFNoNotify
		q.storeUsed()
	}
	q.fence()
	return q.loadAvailIdx() != q.lastAvail
}

// Fail sets DEVICE_NEEDS_RESET because of a request the device cannot
// handle or answer (for instance a block request without a status byte).
func (q *Queue) Fail(err error) { q.owner.fail(q, err) }

// Drain is the loop of a simple device: pop every available chain, let
// process handle it (returning the number of bytes it wrote into the
// chain), push it, signal the driver, and repeat until the ring is empty
// with notifications re-enabled. A process error, or a malformed chain,
// sets DEVICE_NEEDS_RESET and ends the loop; c is scratch space reused
// across calls.
func (q *Queue) Drain(c *Chain, process func(c *Chain) (uint32, error)) error {
	for {
		for {
			ok, err := q.Pop(c)
			if err != nil {
				q.Notify()
				return err
			}
			if !ok {
				break
			}
			n, err := process(c)
			if err != nil {
				q.Fail(err)
				q.Notify()
				return err
			}
			if err := q.Push(c.Head, n); err != nil {
				return err
			}
		}
		q.Notify()
		if !q.EnableNotify() {
			return nil
		}
	}
}

// Driver-side register accessors, used by the transport under its lock.

func (q *Queue) isEnabled() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.enabled
}

func (q *Queue) resetDriver() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.resetDriverState()
}

// driverRegs is the queue's part of the common configuration.
type driverRegs struct {
	size    uint16
	enabled bool
	layout  RingLayout
}

func (q *Queue) regs() driverRegs {
	q.mu.Lock()
	defer q.mu.Unlock()
	return driverRegs{size: q.size, enabled: q.enabled, layout: q.layout}
}

// setRegs applies a driver write: the size and addresses only while the
// queue is disabled (spec §4.1.4.3.2), enable only to 1 (writing 0 is
// reserved to VIRTIO_F_RING_RESET, which is not offered).
func (q *Queue) setRegs(r driverRegs) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.enabled {
		return
	}
	q.size, q.layout = r.size, r.layout
	if r.enabled {
		q.enabled = true
	}
}
