package virtio

import (
	"encoding/binary"
	"sync"
	"testing"

	"github.com/kvmm/kvmm/memory"
)

// testMem is a few MiB of real guest RAM.
func testMem(t testing.TB, size uint64) *memory.Guest {
	t.Helper()
	m, err := memory.New(size, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func putDesc(t testing.TB, m *memory.Guest, table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
	t.Helper()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	if err := m.Write(table+16*uint64(i), b[:]); err != nil {
		t.Fatal(err)
	}
}

// fakeOwner stands for the transport.
type fakeOwner struct {
	mu         sync.Mutex
	failures   []error
	interrupts int
	isBroken   bool
	noDMA      bool
}

func (o *fakeOwner) broken() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.isBroken
}

func (o *fakeOwner) fail(_ *Queue, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures = append(o.failures, err)
	o.isBroken = true
}

func (o *fakeOwner) interrupt(*Queue) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.interrupts++
}

func (o *fakeOwner) dmaAllowed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.noDMA
}

// ring is a queue laid out in test memory the way a driver would: the
// descriptor table at 0x10000, the driver ring at 0x11000, the device
// ring at 0x12000, buffers from 0x20000.
type ring struct {
	t     testing.TB
	mem   *memory.Guest
	q     *Queue
	o     *fakeOwner
	size  uint16
	avail uint16
}

const (
	ringDesc   = 0x10000
	ringDriver = 0x11000
	ringDevice = 0x12000
	bufBase    = 0x20000
)

func newRing(t testing.TB, mem *memory.Guest, size uint16, features uint64) *ring {
	t.Helper()
	o := &fakeOwner{}
	q, err := newQueue(0, 256, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.kick.Close() })
	q.setRegs(driverRegs{size: size, enabled: true, layout: RingLayout{Desc: ringDesc, Driver: ringDriver, Device: ringDevice}})
	if err := q.activate(mem, features|FeatureVersion1); err != nil {
		t.Fatal(err)
	}
	return &ring{t: t, mem: mem, q: q, o: o, size: size}
}

func (r *ring) publish(head uint16) {
	r.t.Helper()
	if err := r.mem.WriteU16(ringDriver+4+2*uint64(r.avail%r.size), head); err != nil {
		r.t.Fatal(err)
	}
	r.avail++
	if err := r.mem.WriteU16(ringDriver+2, r.avail); err != nil {
		r.t.Fatal(err)
	}
}

func (r *ring) usedIdx() uint16 {
	v, err := r.mem.ReadU16(ringDevice + 2)
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

func (r *ring) usedElem(i uint16) (id, n uint32) {
	e := ringDevice + 4 + 8*uint64(i%r.size)
	id, _ = r.mem.ReadU32(e)
	n, _ = r.mem.ReadU32(e + 4)
	return id, n
}
