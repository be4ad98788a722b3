// Package virtiotest drives kvmm's virtio devices from Go the way a guest
// driver does, without KVM: a real memory.Guest, a real PCI root with the
// transport on bus 0, and fakes for the MSI router, ioeventfds and INTx
// lines. Tests build rings in guest memory, make buffers available, notify
// and read the used ring, exactly as Linux's virtio_pci_modern and
// virtio_ring would (Firecracker's test_utils, for kvmm).
package virtiotest

import (
	"encoding/binary"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvmm/kvmm/devices"
	"github.com/kvmm/kvmm/devices/pci"
	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/memory"
	"golang.org/x/sys/unix"
)

// MSI addresses the harness programs: vector n is LAPIC vector BaseVector+n.
const (
	MSIAddr    = 0xFEE00000
	BaseVector = 0x40
)

// Options tune a Harness.
type Options struct {
	// MemSize is guest RAM (default 16 MiB).
	MemSize uint64
	// NoMSIX builds the function without an MSI router (INTx only).
	NoMSIX bool
	// VectorEventFDs gives every MSI-X vector a real eventfd (as KVM's
	// router does, for irqfds): a backend that signals the guest itself,
	// vhost, is handed these through Activation.CallFD. Without it
	// CallFD reports none.
	VectorEventFDs bool
	// IOEventFDs registers a fake KVM: notifications to registered
	// addresses signal the eventfd directly instead of exiting to the
	// MMIO handler.
	IOEventFDs bool
	Log        *slog.Logger
}

// Harness is one virtio PCI function on a bus, with guest RAM.
type Harness struct {
	T         testing.TB
	Mem       *memory.Guest
	MMIO, PIO *devices.Bus
	Root      *pci.Root
	Router    *Router
	IOEvents  *IOEvents
	Transport *virtio.Transport
	INTx      *Lines
	// Slot is the function's slot on bus 0; BAR and MSIXBAR its BAR 4 and
	// BAR 1 addresses.
	Slot         uint8
	BAR, MSIXBAR uint64

	mu   sync.Mutex
	next uint64 // bump allocator of guest memory
}

// New puts dev behind a transport on bus 0, enumerates, and enables
// memory decoding and bus mastering. Everything is released at cleanup.
func New(t testing.TB, dev virtio.Device, o Options) *Harness {
	t.Helper()
	if o.MemSize == 0 {
		o.MemSize = 16 << 20
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mem, err := memory.New(o.MemSize, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &Harness{T: t, Mem: mem, MMIO: devices.NewBus("mmio"), PIO: devices.NewBus("pio"),
		INTx: &Lines{}, next: 1 << 20}
	alloc, err := pci.NewAllocator(pci.AllocatorConfig{
		MMIO32: pci.Range{Start: 0xC0000000, End: 0xDFFFFFFF},
		MMIO64: pci.Range{Start: 64 << 30, End: 128<<30 - 1},
		IO:     pci.Range{Start: 0xC000, End: 0xFFFF}, GSIFirst: 24, GSILast: 1023})
	if err != nil {
		t.Fatal(err)
	}
	var router pci.MSIRouter
	if !o.NoMSIX {
		h.Router = &Router{eventFDs: o.VectorEventFDs}
		router = h.Router
	}
	h.Root, err = pci.NewRoot(pci.RootConfig{PIO: h.PIO, MMIO: h.MMIO, Allocator: alloc, Router: router,
		IRQ: h.INTx.line, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	var ioev virtio.IOEventFDs
	if o.IOEventFDs {
		h.IOEvents = &IOEvents{regs: map[uint64]int{}}
		ioev = h.IOEvents
	}
	h.Transport, err = virtio.NewTransport(virtio.TransportConfig{Device: dev, Mem: mem, Router: router,
		IOEventFDs: ioev, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if h.Slot, err = h.Root.Bus0().Add(h.Transport); err != nil {
		t.Fatal(err)
	}
	if err := h.Root.Enumerate(); err != nil {
		t.Fatal(err)
	}
	var ok bool
	if h.BAR, ok = h.Root.BARAddress(h.Transport, virtio.VirtioBAR); !ok {
		t.Fatal("BAR 4 not mapped after enumeration")
	}
	h.MSIXBAR, _ = h.Root.BARAddress(h.Transport, virtio.MSIXBAR)
	h.SetCommand(h.ConfigRead16(pci.RegCommand) | pci.CmdBusMaster)
	t.Cleanup(func() {
		if err := h.Transport.Close(); err != nil {
			t.Errorf("closing the transport: %v", err)
		}
		if err := h.Root.Close(); err != nil {
			t.Errorf("closing the PCI root: %v", err)
		}
		mem.Close()
	})
	return h
}

// PCI configuration space of the function.

func (h *Harness) ConfigRead16(reg int) uint16 {
	var b [2]byte
	h.Root.ConfigRead(0, h.Slot, 0, reg, b[:])
	return binary.LittleEndian.Uint16(b[:])
}

func (h *Harness) ConfigRead8(reg int) uint8 {
	var b [1]byte
	h.Root.ConfigRead(0, h.Slot, 0, reg, b[:])
	return b[0]
}

func (h *Harness) ConfigRead32(reg int) uint32 {
	var b [4]byte
	h.Root.ConfigRead(0, h.Slot, 0, reg, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (h *Harness) ConfigWrite16(reg int, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	h.Root.ConfigWrite(0, h.Slot, 0, reg, b[:])
}

func (h *Harness) ConfigWrite32(reg int, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	h.Root.ConfigWrite(0, h.Slot, 0, reg, b[:])
}

// SetCommand writes the command register.
func (h *Harness) SetCommand(v uint16) { h.ConfigWrite16(pci.RegCommand, v) }

// FindCap returns the offset of the first capability with id (and, for
// vendor capabilities, cfg_type), or 0.
func (h *Harness) FindCap(id uint8, cfgType int) int {
	for off := int(h.ConfigRead8(pci.RegCapPtr)); off != 0; off = int(h.ConfigRead8(off + 1)) {
		if h.ConfigRead8(off) == id && (cfgType < 0 || int(h.ConfigRead8(off+3)) == cfgType) {
			return off
		}
	}
	return 0
}

// MMIO access, as a vCPU exit would do it.

func (h *Harness) MMIORead(addr uint64, n int) uint64 {
	b := make([]byte, n)
	if !h.MMIO.Read(addr, b) {
		h.T.Fatalf("MMIO read of unmapped %#x", addr)
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func (h *Harness) MMIOWrite(addr uint64, n int, v uint64) {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	h.MMIO.Write(addr, b)
}

// Common configuration registers.

func (h *Harness) Common(off, n int) uint64 {
	return h.MMIORead(h.BAR+virtio.CommonOffset+uint64(off), n)
}

func (h *Harness) SetCommon(off, n int, v uint64) {
	h.MMIOWrite(h.BAR+virtio.CommonOffset+uint64(off), n, v)
}

func (h *Harness) Status() uint8 { return uint8(h.Common(virtio.CommonDeviceStatus, 1)) }

func (h *Harness) SetStatus(v uint8) { h.SetCommon(virtio.CommonDeviceStatus, 1, uint64(v)) }

// ISR reads (and so clears) the ISR status.
func (h *Harness) ISR() uint8 { return uint8(h.MMIORead(h.BAR+virtio.ISROffset, 1)) }

// DeviceConfig reads n bytes of the device configuration at off.
func (h *Harness) DeviceConfig(off, n int) []byte {
	b := make([]byte, n)
	h.MMIO.Read(h.BAR+virtio.DeviceCfgOffset+uint64(off), b)
	return b
}

// DeviceFeatures reads both halves of device_feature.
func (h *Harness) DeviceFeatures() uint64 {
	h.SetCommon(virtio.CommonDeviceFeatureSelect, 4, 0)
	lo := h.Common(virtio.CommonDeviceFeature, 4)
	h.SetCommon(virtio.CommonDeviceFeatureSelect, 4, 1)
	return h.Common(virtio.CommonDeviceFeature, 4)<<32 | lo
}

// Negotiate does the first half of driver initialisation (spec §3.1.1):
// reset, ACKNOWLEDGE, DRIVER, driver features, FEATURES_OK; it reports
// whether FEATURES_OK reads back set.
func (h *Harness) Negotiate(features uint64) bool {
	h.SetStatus(0)
	if s := h.Status(); s != 0 {
		h.T.Fatalf("status %#x after reset", s)
	}
	h.SetStatus(virtio.StatusAcknowledge)
	h.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver)
	for sel := range 2 {
		h.SetCommon(virtio.CommonDriverFeatureSelect, 4, uint64(sel))
		h.SetCommon(virtio.CommonDriverFeature, 4, features>>(32*sel)&0xFFFFFFFF)
	}
	h.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
	return h.Status()&virtio.StatusFeaturesOK != 0
}

// EnableMSIX programs every table entry (vector n -> LAPIC vector
// BaseVector+n, unmasked) and enables MSI-X, as pci_alloc_irq_vectors
// does before the driver assigns vectors.
func (h *Harness) EnableMSIX() {
	cap := h.FindCap(pci.CapIDMSIX, -1)
	if cap == 0 {
		h.T.Fatal("no MSI-X capability")
	}
	n := int(h.ConfigRead16(cap+2)&0x7FF) + 1
	for v := range n {
		e := h.MSIXBAR + uint64(16*v)
		h.MMIOWrite(e, 4, MSIAddr)
		h.MMIOWrite(e+4, 4, 0)
		h.MMIOWrite(e+8, 4, uint64(BaseVector+v))
		h.MMIOWrite(e+12, 4, 0)
	}
	h.ConfigWrite16(cap+2, 1<<15)
}

// Alloc returns n bytes of zeroed guest RAM aligned to align.
func (h *Harness) Alloc(n, align uint64) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := (h.next + align - 1) &^ (align - 1)
	if a+n > h.Mem.Size() {
		h.T.Fatalf("harness out of guest memory (%#x + %#x)", a, n)
	}
	h.next = a + n
	s, _ := h.Mem.Slice(a, n)
	clear(s)
	return a
}

// SetupQueue programs queue i with a ring of size entries (0: the
// maximum), vector as its MSI-X vector, and enables it.
func (h *Harness) SetupQueue(i int, size uint16, vector uint16, eventIdx bool) *DriverQueue {
	h.SetCommon(virtio.CommonQueueSelect, 2, uint64(i))
	if max := uint16(h.Common(virtio.CommonQueueSize, 2)); size == 0 || size > max {
		size = max
	}
	q := &DriverQueue{h: h, Index: i, Size: size, EventIdx: eventIdx}
	n := uint64(size)
	q.Desc = h.Alloc(16*n, 16)
	q.Avail = h.Alloc(6+2*n, 2)
	q.Used = h.Alloc(6+8*n, 4)
	h.SetCommon(virtio.CommonQueueSize, 2, n)
	h.SetCommon(virtio.CommonQueueMSIXVector, 2, uint64(vector))
	for _, r := range []struct {
		off  int
		addr uint64
	}{{virtio.CommonQueueDesc, q.Desc}, {virtio.CommonQueueDriver, q.Avail}, {virtio.CommonQueueDevice, q.Used}} {
		// Two 32-bit halves, as Linux's vp_iowrite64_twopart does.
		h.SetCommon(r.off, 4, r.addr&0xFFFFFFFF)
		h.SetCommon(r.off+4, 4, r.addr>>32)
	}
	h.SetCommon(virtio.CommonQueueEnable, 2, 1)
	return q
}

// DriverOK sets DRIVER_OK.
func (h *Harness) DriverOK() {
	h.SetStatus(h.Status() | virtio.StatusDriverOK)
}

// Init is a whole driver initialisation: negotiate features (failing
// the test if FEATURES_OK is refused), enable MSI-X unless the harness
// has none, set up one queue per size (vector i for queue i), DRIVER_OK.
func (h *Harness) Init(features uint64, sizes ...uint16) []*DriverQueue {
	h.T.Helper()
	if !h.Negotiate(features) {
		h.T.Fatalf("FEATURES_OK refused for %#x (offered %#x)", features, h.DeviceFeatures())
	}
	vec := func(i int) uint16 { return virtio.NoVector }
	if h.Router != nil {
		h.EnableMSIX()
		h.SetCommon(virtio.CommonConfigMSIXVector, 2, uint64(len(sizes)))
		vec = func(i int) uint16 { return uint16(i) }
	}
	var qs []*DriverQueue
	for i, s := range sizes {
		qs = append(qs, h.SetupQueue(i, s, vec(i), features&virtio.FeatureEventIdx != 0))
	}
	h.DriverOK()
	if s := h.Status(); s&virtio.StatusDriverOK == 0 || s&virtio.StatusNeedsReset != 0 {
		h.T.Fatalf("status %#x after DRIVER_OK", s)
	}
	return qs
}

// Notify tells the device about queue i the way the guest does: a 16-bit
// write of the index to the queue's notification address, which the
// fake KVM turns into an eventfd signal when an ioeventfd is registered
// there.
func (h *Harness) Notify(i int) {
	addr := h.BAR + virtio.NotifyOffset + uint64(i)*virtio.NotifyOffMultiplier
	if h.IOEvents != nil && h.IOEvents.signal(addr) {
		return
	}
	h.MMIOWrite(addr, 2, uint64(i))
}

// Lines records the level of every INTx GSI.
type Lines struct {
	mu     sync.Mutex
	levels map[uint32]bool
	raised atomic.Uint64
}

func (l *Lines) line(gsi uint32) devices.IRQLine {
	return devices.IRQLineFunc(func(high bool) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.levels == nil {
			l.levels = map[uint32]bool{}
		}
		l.levels[gsi] = high
		if high {
			l.raised.Add(1)
		}
		return nil
	})
}

// Any reports whether some line is asserted.
func (l *Lines) Any() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.levels {
		if v {
			return true
		}
	}
	return false
}

// Raised counts assertions.
func (l *Lines) Raised() uint64 { return l.raised.Load() }

// Router is a fake MSI router: each vector counts its deliveries.
type Router struct {
	mu       sync.Mutex
	vectors  []*Vector
	eventFDs bool
}

// NewVector implements pci.MSIRouter.
func (r *Router) NewVector() (pci.MSIVector, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := &Vector{fd: -1}
	if r.eventFDs {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return nil, err
		}
		v.fd = fd
	}
	r.vectors = append(r.vectors, v)
	return v, nil
}

// EventFD is vector n's eventfd (Options.VectorEventFDs), or -1.
func (r *Router) EventFD(n int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n >= len(r.vectors) {
		return -1
	}
	return r.vectors[n].fd
}

// Fired is the number of interrupts delivered on vector n.
func (r *Router) Fired(n int) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n >= len(r.vectors) {
		return 0
	}
	return r.vectors[n].fired.Load()
}

// WaitFired waits until vector n has fired more than before.
func (r *Router) WaitFired(n int, before uint64, timeout time.Duration) bool {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(50 * time.Microsecond) {
		if r.Fired(n) > before {
			return true
		}
	}
	return false
}

// Vector is one fake MSI vector.
type Vector struct {
	fired atomic.Uint64
	fd    int // -1 without Options.VectorEventFDs
}

func (v *Vector) SetMessage(uint64, uint32) error { return nil }
func (v *Vector) Attach(bool) error               { return nil }

// Trigger counts the interrupt and, with an eventfd, signals it as KVM's
// irqfd path would, so a test driver can sleep until its interrupt.
func (v *Vector) Trigger() error {
	v.fired.Add(1)
	if v.fd >= 0 {
		var one [8]byte
		one[0] = 1
		if _, err := unix.Write(v.fd, one[:]); err != nil && err != unix.EAGAIN {
			return err
		}
	}
	return nil
}

func (v *Vector) TakePending() (bool, error) { return false, nil }
func (v *Vector) Pending() bool              { return false }
func (v *Vector) EventFD() int               { return v.fd }

func (v *Vector) Close() error {
	if v.fd < 0 {
		return nil
	}
	fd := v.fd
	v.fd = -1
	return unix.Close(fd)
}

// IOEvents is a fake KVM_IOEVENTFD table.
type IOEvents struct {
	mu    sync.Mutex
	regs  map[uint64]int
	count atomic.Uint64
}

// Register implements virtio.IOEventFDs.
func (e *IOEvents) Register(addr uint64, fd int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.regs[addr] = fd
	e.count.Add(1)
	return nil
}

// Unregister implements virtio.IOEventFDs.
func (e *IOEvents) Unregister(addr uint64, fd int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.regs, addr)
	return nil
}

// Addrs lists the registered addresses.
func (e *IOEvents) Addrs() map[uint64]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[uint64]int{}
	for a, fd := range e.regs {
		out[a] = fd
	}
	return out
}

// Signals counts notifications the fake KVM delivered.
func (e *IOEvents) Signals() uint64 { return e.count.Load() }

func (e *IOEvents) signal(addr uint64) bool {
	e.mu.Lock()
	fd, ok := e.regs[addr]
	e.mu.Unlock()
	if !ok {
		return false
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	_, _ = writeFD(fd, b[:])
	return true
}
