package pci

import (
	"encoding/binary"
	"log/slog"
	"sync"
	"testing"

	"github.com/kvmm/kvmm/devices"
)

// fakeLine records the level of one IOAPIC input.
type fakeLine struct {
	mu      sync.Mutex
	level   bool
	changes int
}

func (l *fakeLine) SetLevel(high bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if high != l.level {
		l.changes++
	}
	l.level = high
	return nil
}

func (l *fakeLine) get() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.level
}

// fakeRouter hands out fakeVectors that behave like an eventfd bound to a
// GSI route with an irqfd: a signal while attached is delivered, a signal
// while detached waits in the counter.
type fakeRouter struct {
	mu      sync.Mutex
	next    uint32
	vectors []*fakeVector
}

type fakeVector struct {
	gsi       uint32
	addr      uint64
	data      uint32
	routed    bool
	attached  bool
	counter   int // eventfd counter while detached
	delivered []uint32
	closed    bool
	failSet   bool
}

func (r *fakeRouter) NewVector() (MSIVector, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := &fakeVector{gsi: 24 + r.next}
	r.next++
	r.vectors = append(r.vectors, v)
	return v, nil
}

func (v *fakeVector) SetMessage(addr uint64, data uint32) error {
	if v.failSet {
		return errFake
	}
	v.addr, v.data, v.routed = addr, data, true
	return nil
}

func (v *fakeVector) Attach(on bool) error {
	v.attached = on
	if on && v.counter > 0 { // KVM injects what is pending at assign time
		v.counter = 0
		v.delivered = append(v.delivered, v.data)
	}
	return nil
}

func (v *fakeVector) Trigger() error {
	if v.attached {
		v.delivered = append(v.delivered, v.data)
	} else {
		v.counter++
	}
	return nil
}

func (v *fakeVector) TakePending() (bool, error) {
	p := v.counter > 0
	v.counter = 0
	return p, nil
}

func (v *fakeVector) Pending() bool { return v.counter > 0 }
func (v *fakeVector) EventFD() int  { return 1000 + int(v.gsi) }
func (v *fakeVector) Close() error  { v.closed = true; return nil }

type fakeErr string

func (e fakeErr) Error() string { return string(e) }

const errFake = fakeErr("fake failure")

// rig is a Root on fresh buses with fake IRQ lines and router.
type rig struct {
	t      testing.TB
	pio    *devices.Bus
	mmio   *devices.Bus
	alloc  *Allocator
	root   *Root
	router *fakeRouter
	linesM sync.Mutex
	lines  map[uint32]*fakeLine
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testAllocator(t testing.TB, mmio64 bool) *Allocator {
	cfg := AllocatorConfig{
		MMIO32:   Range{0xC0000000, 0xDFFFFFFF},
		IO:       Range{0xC000, 0xFFFF},
		GSIFirst: 24, GSILast: 1023,
	}
	if mmio64 {
		cfg.MMIO64 = Range{64 << 30, 128<<30 - 1}
	}
	a, err := NewAllocator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, pio: devices.NewBus("pio"), mmio: devices.NewBus("mmio"), router: &fakeRouter{},
		lines: map[uint32]*fakeLine{}}
	r.alloc = testAllocator(t, true)
	root, err := NewRoot(RootConfig{PIO: r.pio, MMIO: r.mmio, Allocator: r.alloc, Router: r.router, Log: quietLog(),
		IRQ: func(gsi uint32) devices.IRQLine { return r.line(gsi) }})
	if err != nil {
		t.Fatal(err)
	}
	r.root = root
	return r
}

func (r *rig) line(gsi uint32) *fakeLine {
	r.linesM.Lock()
	defer r.linesM.Unlock()
	if r.lines[gsi] == nil {
		r.lines[gsi] = &fakeLine{}
	}
	return r.lines[gsi]
}

func cf8Addr(bus, dev, fn uint8, reg int) uint32 {
	return 1<<31 | uint32(bus)<<16 | uint32(dev)<<11 | uint32(fn)<<8 | uint32(reg&0xFC)
}

// cfRead reads n bytes through CF8/CFC the way Linux's pci_conf1_read does.
func (r *rig) cfRead(bus, dev, fn uint8, reg, n int) uint32 {
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], cf8Addr(bus, dev, fn, reg))
	r.pio.Write(ConfigAddressPort, a[:])
	d := make([]byte, n)
	if !r.pio.Read(uint64(ConfigDataPort+reg&3), d) {
		r.t.Fatalf("CFC not mapped")
	}
	return uint32(getLE(d))
}

func (r *rig) cfWrite(bus, dev, fn uint8, reg, n int, v uint32) {
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], cf8Addr(bus, dev, fn, reg))
	r.pio.Write(ConfigAddressPort, a[:])
	d := make([]byte, n)
	putLE(d, uint64(v))
	r.pio.Write(uint64(ConfigDataPort+reg&3), d)
}

func ecamOff(bus, dev, fn uint8, reg int) uint64 {
	return uint64(bus)<<20 | uint64(dev)<<15 | uint64(fn)<<12 | uint64(reg)
}

func (r *rig) ecamRead(bus, dev, fn uint8, reg, n int) uint32 {
	d := make([]byte, n)
	base, _ := r.root.ECAM()
	if !r.mmio.Read(base+ecamOff(bus, dev, fn, reg), d) {
		r.t.Fatalf("ECAM not mapped")
	}
	return uint32(getLE(d))
}

func (r *rig) ecamWrite(bus, dev, fn uint8, reg, n int, v uint32) {
	d := make([]byte, n)
	putLE(d, uint64(v))
	base, _ := r.root.ECAM()
	r.mmio.Write(base+ecamOff(bus, dev, fn, reg), d)
}

// recorder is a BAR region handler that remembers its last write and
// answers reads with a fixed pattern.
type recorder struct {
	mu     sync.Mutex
	writes []uint64
	fill   byte
}

func (d *recorder) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = d.fill
	}
}

func (d *recorder) Write(off uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes = append(d.writes, off)
}

// testFunction is a plain endpoint with one BAR of every kind (and, with
// msix, an MSI-X table in BAR 1): the stand-in for a device model.
type testFunction struct {
	cfg  *Config
	regs [3]*recorder
	msix *MSIX
}

func (f *testFunction) PCIConfig() *Config { return f.cfg }

func newTestFunction(t testing.TB, router MSIRouter, pin uint8) *testFunction {
	t.Helper()
	// Device ID 0x107F is in virtio's modern range (0x1040 + type 63, an
	// unassigned type), so lspci decodes its virtio-format capability.
	c, err := NewConfig(Header{VendorID: 0x1AF4, DeviceID: 0x107F, Revision: 1, Class: 0x00FF00,
		SubsysVendorID: 0x1AF4, SubsysID: 0x1234, InterruptPin: pin})
	if err != nil {
		t.Fatal(err)
	}
	f := &testFunction{cfg: c}
	for i := range f.regs {
		f.regs[i] = &recorder{fill: byte(0xA0 + i)}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.SetBAR(0, BAR{Kind: BARMem32, Size: 0x1000, Regions: []Region{{Name: "regs", Size: 0x100, Dev: f.regs[0]}}}))
	must(c.SetBAR(1, BAR{Kind: BARMem32, Size: 0x1000}))
	must(c.SetBAR(2, BAR{Kind: BARMem64, Size: 0x4000, Prefetchable: true, Regions: []Region{{Name: "common", Size: 0x4000, Dev: f.regs[1]}}}))
	must(c.SetBAR(4, BAR{Kind: BARIO, Size: 0x20, Regions: []Region{{Name: "ports", Size: 0x20, Dev: f.regs[2]}}}))
	if router != nil {
		m, err := NewMSIX(4, router, quietLog())
		must(err)
		_, err = c.AddMSIX(m, MSIXLayout{TableBAR: 1, TableOffset: 0, PBABAR: 1, PBAOffset: 0x800})
		must(err)
		f.msix = m
	}
	// struct virtio_pci_cap: len 16, cfg_type 1 (common), BAR 2, offset 0,
	// length 0x100.
	_, err = c.AddCapability(Capability{ID: CapIDVendor, Data: []byte{0, 0, 16, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}})
	must(err)
	return f
}
