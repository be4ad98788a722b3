package pci

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/kvmm/kvmm/devices"
	"github.com/kvmm/kvmm/layout"
)

// Configuration mechanism #1 (PCI 3.0 §3.2.2.3.2): a 32-bit address
// register at 0xCF8 and a data window at 0xCFC-0xCFF.
const (
	ConfigAddressPort = 0xCF8
	ConfigDataPort    = 0xCFC
	cf8Enable         = 1 << 31
	// cf8Writable: enable, bus, device, function and the DWORD register
	// number; the reserved bits 30:24 and the two low bits read as zero.
	cf8Writable = cf8Enable | 0x00FFFFFC
)

// ECAM addressing (PCI Express 5.0 §7.2.2): bus << 20 | device << 15 |
// function << 12 | register.
const ecamBusShift, ecamDevShift, ecamFnShift = 20, 15, 12

// RootConfig connects a Root to the VM.
type RootConfig struct {
	// PIO and MMIO are the buses BARs are mapped on; CF8/CFC goes on PIO,
	// ECAM on MMIO.
	PIO, MMIO *devices.Bus
	// Allocator is where Enumerate takes BAR addresses from.
	Allocator *Allocator
	// IRQ returns the interrupt line of an IOAPIC GSI (16-23 for INTx).
	IRQ func(gsi uint32) devices.IRQLine
	// Router creates MSI-X vector routes for the devices (MSIX).
	Router MSIRouter
	// ECAMBase and ECAMSize place the ECAM window; zero means
	// layout.ECAMStart and layout.ECAMSize.
	ECAMBase, ECAMSize uint64
	Log                *slog.Logger
}

// Root is the PCI hierarchy of a VM (segment 0): the host bridge with its
// two configuration mechanisms, bus 0 and every bus behind bridges. It
// routes configuration cycles, keeps every BAR's regions mapped where the
// guest programmed them, and drives the INTx lines.
//
// Lock order: Root.mu, then a function's configuration lock, then its MSI-X
// and INTx locks, then the devices.Bus locks.
type Root struct {
	log      *slog.Logger
	pio      *devices.Bus
	mmio     *devices.Bus
	alloc    *Allocator
	router   MSIRouter
	irq      func(gsi uint32) devices.IRQLine
	ecamBase uint64
	ecamSize uint64

	mu         sync.Mutex
	cf8        uint32
	bus0       *Bus
	host       *Config
	lines      [INTxGSICount]*sharedLine
	enumerated bool
}

// Bus is one PCI bus segment: bus 0 or the secondary bus of a bridge.
// Its bus number is whatever the upstream bridge's registers say.
type Bus struct {
	root   *Root
	bridge *Bridge // upstream bridge; nil for bus 0
	slots  *IDAllocator
	fns    [slotsPerBus][fnsPerSlot]Function
}

// NewRoot creates the hierarchy with the host bridge at 00:00.0, and maps
// the CF8/CFC ports and the ECAM window.
func NewRoot(cfg RootConfig) (*Root, error) {
	if cfg.PIO == nil || cfg.MMIO == nil || cfg.Allocator == nil || cfg.IRQ == nil {
		return nil, errors.New("PCI root: PIO, MMIO, Allocator and IRQ are required")
	}
	r := &Root{log: cfg.Log, pio: cfg.PIO, mmio: cfg.MMIO, alloc: cfg.Allocator, router: cfg.Router,
		irq: cfg.IRQ, ecamBase: cfg.ECAMBase, ecamSize: cfg.ECAMSize}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.ecamBase == 0 && r.ecamSize == 0 {
		r.ecamBase, r.ecamSize = layout.ECAMStart, layout.ECAMSize
	}
	if r.ecamSize == 0 || r.ecamSize%(1<<ecamBusShift) != 0 || r.ecamSize > 256<<ecamBusShift {
		return nil, fmt.Errorf("PCI root: ECAM size %#x must be 1..256 buses of 1 MiB", r.ecamSize)
	}
	var err error
	if r.bus0, err = r.newBus(nil); err != nil {
		return nil, err
	}
	if r.host, err = newHostBridge(); err != nil {
		return nil, err
	}
	if err := r.bus0.AddAt(0, 0, r.host); err != nil {
		return nil, err
	}
	if err := r.pio.Insert(ConfigAddressPort, 4, "pci-config-address", cf8Port{r}); err != nil {
		return nil, fmt.Errorf("PCI root: %w", err)
	}
	if err := r.pio.Insert(ConfigDataPort, 4, "pci-config-data", cfcPort{r}); err != nil {
		return nil, fmt.Errorf("PCI root: %w", err)
	}
	if err := r.mmio.Insert(r.ecamBase, r.ecamSize, "pci-ecam", ecam{r}); err != nil {
		return nil, fmt.Errorf("PCI root: %w", err)
	}
	return r, nil
}

func (r *Root) newBus(upstream *Bridge) (*Bus, error) {
	slots, err := NewIDAllocator("pci slot", 0, slotsPerBus-1)
	if err != nil {
		return nil, err
	}
	return &Bus{root: r, bridge: upstream, slots: slots}, nil
}

// Bus0 is the root bus.
func (r *Root) Bus0() *Bus { return r.bus0 }

// Router is the MSI router devices create their MSI-X vectors with.
func (r *Root) Router() MSIRouter { return r.router }

// ECAM is the ECAM window (base, size).
func (r *Root) ECAM() (base, size uint64) { return r.ecamBase, r.ecamSize }

// Add puts f in the lowest free slot of the bus as function 0 and returns
// the slot.
func (b *Bus) Add(f Function) (uint8, error) {
	slot, err := b.slots.Alloc()
	if err != nil {
		return 0, fmt.Errorf("PCI bus: %w", err)
	}
	if err := b.attach(uint8(slot), 0, f); err != nil {
		_ = b.slots.Free(slot)
		return 0, err
	}
	return uint8(slot), nil
}

// AddAt puts f at slot.fn. Function 0 of a slot must come first: a guest
// scans functions 1-7 only when function 0 says it is multi-function.
func (b *Bus) AddAt(slot, fn uint8, f Function) error {
	if slot >= slotsPerBus || fn >= fnsPerSlot {
		return fmt.Errorf("PCI bus: slot %d function %d out of range: %w", slot, fn, ErrInvalid)
	}
	if fn == 0 {
		if err := b.slots.AllocAt(uint32(slot)); err != nil {
			return fmt.Errorf("PCI bus: %w", err)
		}
	}
	if err := b.attach(slot, fn, f); err != nil {
		if fn == 0 {
			_ = b.slots.Free(uint32(slot))
		}
		return err
	}
	return nil
}

// AddBridge adds a PCI-to-PCI bridge in the lowest free slot and returns
// it; its secondary bus takes functions like any other.
func (b *Bus) AddBridge() (*Bridge, error) {
	c, err := newBridgeConfig()
	if err != nil {
		return nil, err
	}
	br := &Bridge{cfg: c}
	if br.secondary, err = b.root.newBus(br); err != nil {
		return nil, err
	}
	if _, err := b.Add(br); err != nil {
		return nil, err
	}
	return br, nil
}

// UpstreamBridge is the bridge the bus is behind (nil for bus 0).
func (b *Bus) UpstreamBridge() *Bridge { return b.bridge }

func (b *Bus) attach(slot, fn uint8, f Function) error {
	r := b.root
	r.mu.Lock()
	defer r.mu.Unlock()
	c := f.PCIConfig()
	if r.enumerated {
		return fmt.Errorf("PCI bus: adding a function after enumeration (hotplug) is not supported: %w", ErrInvalid)
	}
	if b.fns[slot][fn] != nil {
		return fmt.Errorf("PCI bus: slot %d function %d is taken: %w", slot, fn, ErrInvalid)
	}
	if fn != 0 && b.fns[slot][0] == nil {
		return fmt.Errorf("PCI bus: slot %d function %d before function 0: %w", slot, fn, ErrInvalid)
	}
	if !c.attached.CompareAndSwap(false, true) {
		return fmt.Errorf("PCI bus: function is already on a bus: %w", ErrInvalid)
	}
	b.fns[slot][fn] = f
	if fn != 0 {
		f0 := b.fns[slot][0].PCIConfig()
		f0.mu.Lock()
		f0.data[RegHeaderType] |= HeaderMultiFunction
		f0.mu.Unlock()
	}
	if c.pin != PinNone {
		c.intx.connect(r.line(b.rootGSI(slot, c.pin)))
	}
	return nil
}

// rootGSI follows the INTx wiring of pin of the device in slot up to bus 0.
func (b *Bus) rootGSI(slot, pin uint8) uint32 {
	for bus := b; bus.bridge != nil; {
		pin = SwizzlePin(slot, pin)
		up, upSlot := bus.root.locate(bus.bridge)
		bus, slot = up, upSlot
		if up == nil {
			break
		}
	}
	return INTxGSI(slot, pin)
}

// locate finds the bus and slot holding f (r.mu held).
func (r *Root) locate(f Function) (*Bus, uint8) {
	var found *Bus
	var slot uint8
	r.walk(func(b *Bus, s, fn uint8, g Function) {
		if g == f {
			found, slot = b, s
		}
	})
	return found, slot
}

// walk visits every function in the topology, bus 0 first, depth first.
func (r *Root) walk(visit func(b *Bus, slot, fn uint8, f Function)) {
	var rec func(b *Bus)
	rec = func(b *Bus) {
		for s := range b.fns {
			for fn, f := range b.fns[s] {
				if f == nil {
					continue
				}
				visit(b, uint8(s), uint8(fn), f)
				if br, ok := f.(*Bridge); ok {
					rec(br.secondary)
				}
			}
		}
	}
	rec(r.bus0)
}

// line returns the shared INTx line of gsi (r.mu held).
func (r *Root) line(gsi uint32) *sharedLine {
	i := gsi - INTxGSIBase
	if r.lines[i] == nil {
		r.lines[i] = &sharedLine{gsi: gsi, irq: r.irq(gsi), log: r.log}
	}
	return r.lines[i]
}

// lookup routes a configuration cycle to the function it addresses, as
// the bridges' bus-number registers steer it: type 0 on the bus whose
// number matches, type 1 through every bridge whose range holds the
// target (r.mu held).
func (r *Root) lookup(bus, dev, fn uint8) Function {
	b, cur := r.bus0, uint8(0)
	for bus != cur {
		next := (*Bus)(nil)
		for s := range b.fns {
			for _, f := range b.fns[s] {
				br, ok := f.(*Bridge)
				if !ok {
					continue
				}
				// Secondary must be above the current bus: a guest that
				// misprograms the numbers cannot make the walk loop.
				if st := br.state(); st.routes(bus) && st.secondary > cur {
					next, cur = br.secondary, st.secondary
					break
				}
			}
			if next != nil {
				break
			}
		}
		if next == nil {
			return nil
		}
		b = next
	}
	if dev >= slotsPerBus || fn >= fnsPerSlot {
		return nil
	}
	return b.fns[dev][fn]
}

// configRead performs a configuration read of len(data) bytes (1, 2 or 4,
// naturally aligned) at reg of bus:dev.fn. No function: all ones, as a
// master abort reads.
func (r *Root) configRead(bus, dev, fn uint8, reg int, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.lookup(bus, dev, fn)
	if f == nil || !accessOK(reg, len(data)) {
		fill(data, 0xFF)
		return
	}
	f.PCIConfig().Read(reg, data)
}

func (r *Root) configWrite(bus, dev, fn uint8, reg int, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.lookup(bus, dev, fn)
	if f == nil || !accessOK(reg, len(data)) {
		return
	}
	f.PCIConfig().Write(reg, data)
	// The header holds everything that decides decoding: the command
	// register, BARs, and a bridge's bus numbers and windows.
	if reg < FirstCapOffset {
		r.remap()
	}
}

func accessOK(reg, n int) bool {
	return (n == 1 || n == 2 || n == 4) && reg%n == 0 && reg >= 0 && reg+n <= ExtConfigSize
}

// cf8Port is the CONFIG_ADDRESS register. Only 32-bit accesses reach it,
// as on a PC chipset: byte accesses to 0xCF8-0xCFB are other registers
// (0xCF9 is the reset control register), and Linux's probe
// (pci_check_type1) relies on a byte write to 0xCFB not changing it.
type cf8Port struct{ r *Root }

func (p cf8Port) Read(off uint64, data []byte) {
	if off != 0 || len(data) != 4 {
		fill(data, 0xFF)
		return
	}
	p.r.mu.Lock()
	v := p.r.cf8
	p.r.mu.Unlock()
	putLE(data, uint64(v))
}

func (p cf8Port) Write(off uint64, data []byte) {
	if off != 0 || len(data) != 4 {
		return
	}
	p.r.mu.Lock()
	p.r.cf8 = uint32(getLE(data)) & cf8Writable
	p.r.mu.Unlock()
}

// cfcPort is CONFIG_DATA: any width at 0xCFC-0xCFF, register =
// (CF8 & 0xFC) + port offset.
type cfcPort struct{ r *Root }

func (p cfcPort) target(off uint64, n int) (bus, dev, fn uint8, reg int, ok bool) {
	p.r.mu.Lock()
	a := p.r.cf8
	p.r.mu.Unlock()
	if a&cf8Enable == 0 || off+uint64(n) > 4 {
		return 0, 0, 0, 0, false
	}
	return uint8(a >> 16), uint8(a>>11) & 0x1F, uint8(a>>8) & 0x7, int(a&0xFC) + int(off), true
}

func (p cfcPort) Read(off uint64, data []byte) {
	bus, dev, fn, reg, ok := p.target(off, len(data))
	if !ok {
		fill(data, 0xFF)
		return
	}
	p.r.configRead(bus, dev, fn, reg, data)
}

func (p cfcPort) Write(off uint64, data []byte) {
	if bus, dev, fn, reg, ok := p.target(off, len(data)); ok {
		p.r.configWrite(bus, dev, fn, reg, data)
	}
}

// ecam is the memory-mapped configuration space. A QWORD access is two
// DWORD configuration cycles.
type ecam struct{ r *Root }

func splitECAM(off uint64) (bus, dev, fn uint8, reg int) {
	return uint8(off >> ecamBusShift), uint8(off>>ecamDevShift) & 0x1F, uint8(off>>ecamFnShift) & 0x7, int(off & 0xFFF)
}

func (e ecam) Read(off uint64, data []byte) {
	if len(data) == 8 && off%8 == 0 {
		e.Read(off, data[:4])
		e.Read(off+4, data[4:])
		return
	}
	bus, dev, fn, reg := splitECAM(off)
	e.r.configRead(bus, dev, fn, reg, data)
}

func (e ecam) Write(off uint64, data []byte) {
	if len(data) == 8 && off%8 == 0 {
		e.Write(off, data[:4])
		e.Write(off+4, data[4:])
		return
	}
	bus, dev, fn, reg := splitECAM(off)
	e.r.configWrite(bus, dev, fn, reg, data)
}

func putLE(b []byte, v uint64) {
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
}

func getLE(b []byte) uint64 {
	var v uint64
	for i := range b {
		v |= uint64(b[i]) << (8 * i)
	}
	return v
}

// ConfigRead and ConfigWrite perform a configuration cycle from the host
// side (tests, the API), exactly as the guest's would be routed.
func (r *Root) ConfigRead(bus, dev, fn uint8, reg int, data []byte) {
	r.configRead(bus, dev, fn, reg, data)
}

// ConfigWrite: see ConfigRead.
func (r *Root) ConfigWrite(bus, dev, fn uint8, reg int, data []byte) {
	r.configWrite(bus, dev, fn, reg, data)
}

// Close releases the functions' MSI-X vectors (eventfds, routes, GSIs).
// Call it before the VM fd is closed.
func (r *Root) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	r.walk(func(_ *Bus, _, _ uint8, f Function) {
		if m := f.PCIConfig().msix; m != nil {
			errs = append(errs, m.Close())
		}
	})
	return errors.Join(errs...)
}
