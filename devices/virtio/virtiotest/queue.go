package virtiotest

import (
	"encoding/binary"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/kvmm/kvmm/devices/virtio"
	"golang.org/x/sys/unix"
)

func writeFD(fd int, b []byte) (int, error) { return unix.Write(fd, b) }

// DriverQueue is the driver's side of a split virtqueue in guest memory.
type DriverQueue struct {
	h                 *Harness
	Index             int
	Size              uint16
	Desc, Avail, Used uint64
	EventIdx          bool

	nextDesc uint16
	availIdx uint16
	lastUsed uint16
}

// Buf is a buffer to chain: guest address, length, device-writable.
type Buf struct {
	Addr  uint64
	Len   uint32
	Write bool
}

// WriteDesc writes descriptor i of the table at table (raw: tests use it
// to build bogus chains).
func (q *DriverQueue) WriteDesc(table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
	m := q.h.Mem
	base := table + 16*uint64(i)
	must(m.WriteU64(base, addr))
	must(m.WriteU32(base+8, n))
	must(m.WriteU16(base+12, flags))
	must(m.WriteU16(base+14, next))
}

func must(err error) {
	if err != nil {
		panic(err) // harness misuse: addresses come from the harness
	}
}

// Add chains bufs through the descriptor table and returns the head (not
// yet available: see Publish, or AddAndPublish).
func (q *DriverQueue) Add(bufs ...Buf) uint16 {
	head := q.nextDesc
	for i, b := range bufs {
		idx := q.nextDesc
		q.nextDesc = (q.nextDesc + 1) % q.Size
		var flags uint16
		if b.Write {
			flags |= virtio.DescFWrite
		}
		if i < len(bufs)-1 {
			flags |= virtio.DescFNext
		}
		q.WriteDesc(q.Desc, idx, b.Addr, b.Len, flags, q.nextDesc)
	}
	return head
}

// AddIndirect puts bufs in an indirect table referenced by one
// descriptor.
func (q *DriverQueue) AddIndirect(bufs ...Buf) uint16 {
	table := q.h.Alloc(16*uint64(len(bufs)), 16)
	for i, b := range bufs {
		var flags uint16
		if b.Write {
			flags |= virtio.DescFWrite
		}
		if i < len(bufs)-1 {
			flags |= virtio.DescFNext
		}
		q.WriteDesc(table, uint16(i), b.Addr, b.Len, flags, uint16(i+1))
	}
	head := q.nextDesc
	q.nextDesc = (q.nextDesc + 1) % q.Size
	q.WriteDesc(q.Desc, head, table, uint32(16*len(bufs)), virtio.DescFIndirect, 0)
	return head
}

// Publish makes head available: the ring entry, then the index (with an
// atomic store, the driver's write barrier).
func (q *DriverQueue) Publish(head uint16) {
	must(q.h.Mem.WriteU16(q.Avail+4+2*uint64(q.availIdx%q.Size), head))
	q.availIdx++
	q.SetAvailIdx(q.availIdx)
}

// SetAvailIdx stores avail->idx (raw).
func (q *DriverQueue) SetAvailIdx(v uint16) {
	q.availIdx = v
	s, err := q.h.Mem.Slice(q.Avail, 4)
	must(err)
	flags := binary.LittleEndian.Uint16(s)
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&s[0])), uint32(flags)|uint32(v)<<16)
}

// AddAndPublish is Add then Publish.
func (q *DriverQueue) AddAndPublish(bufs ...Buf) uint16 {
	h := q.Add(bufs...)
	q.Publish(h)
	return h
}

// SetAvailFlags writes avail->flags (NO_INTERRUPT).
func (q *DriverQueue) SetAvailFlags(v uint16) { must(q.h.Mem.WriteU16(q.Avail, v)) }

// SetUsedEvent writes used_event (EVENT_IDX).
func (q *DriverQueue) SetUsedEvent(v uint16) {
	must(q.h.Mem.WriteU16(q.Avail+4+2*uint64(q.Size), v))
}

// AvailEvent reads avail_event (EVENT_IDX).
func (q *DriverQueue) AvailEvent() uint16 {
	v, err := q.h.Mem.ReadU16(q.Used + 4 + 8*uint64(q.Size))
	must(err)
	return v
}

// UsedIdx reads used->idx.
func (q *DriverQueue) UsedIdx() uint16 {
	s, err := q.h.Mem.Slice(q.Used, 4)
	must(err)
	return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&s[0]))) >> 16)
}

// UsedFlags reads used->flags.
func (q *DriverQueue) UsedFlags() uint16 {
	v, err := q.h.Mem.ReadU16(q.Used)
	must(err)
	return v
}

// NextUsed returns the next used element if the device published one.
func (q *DriverQueue) NextUsed() (id uint16, n uint32, ok bool) {
	if q.UsedIdx() == q.lastUsed {
		return 0, 0, false
	}
	e := q.Used + 4 + 8*uint64(q.lastUsed%q.Size)
	id32, err := q.h.Mem.ReadU32(e)
	must(err)
	n, err = q.h.Mem.ReadU32(e + 4)
	must(err)
	q.lastUsed++
	if q.EventIdx {
		// Interrupt me on the next completion, as virtqueue_enable_cb does.
		q.SetUsedEvent(q.lastUsed)
	}
	return uint16(id32), n, true
}

// WaitUsed polls for the next used element (the harness has no
// interrupt handler, like the test guests).
func (q *DriverQueue) WaitUsed(timeout time.Duration) (id uint16, n uint32, ok bool) {
	end := time.Now().Add(timeout)
	for spins := 0; ; spins++ {
		if id, n, ok = q.NextUsed(); ok {
			return id, n, true
		}
		if time.Now().After(end) {
			return 0, 0, false
		}
		// Spin first (a benchmark measures the device, not our sleep),
		// then back off.
		if spins < 5000 {
			runtime.Gosched()
		} else {
			time.Sleep(20 * time.Microsecond)
		}
	}
}

// Submit publishes bufs as one chain, notifies and waits for it.
func (q *DriverQueue) Submit(timeout time.Duration, bufs ...Buf) (n uint32, ok bool) {
	head := q.AddAndPublish(bufs...)
	q.h.Notify(q.Index)
	id, n, ok := q.WaitUsed(timeout)
	if ok && id != head {
		q.h.T.Fatalf("queue %d: used id %d, want %d", q.Index, id, head)
	}
	return n, ok
}
