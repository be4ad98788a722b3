package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/kvmm/kvmm/devices"
)

// Function is one PCI function, what a bus slot holds. A device model (a
// virtio-pci transport, a bridge) builds its configuration space as a
// *Config and returns it here; the Root routes configuration cycles to it
// and maps its BARs.
type Function interface {
	PCIConfig() *Config
}

// ErrInvalid reports a function description the package refuses.
var ErrInvalid = errors.New("invalid PCI function")

// Header is the identity of a function: the read-only registers of the
// first 64 bytes that a driver matches on.
type Header struct {
	VendorID, DeviceID uint16
	Revision           uint8
	// Class is base class << 16 | subclass << 8 | programming interface.
	Class uint32
	// SubsysVendorID and SubsysID (type 0 header only; bridges carry them
	// in an SSVID capability).
	SubsysVendorID, SubsysID uint16
	// InterruptPin is PinNone or PinA..PinD.
	InterruptPin uint8
}

// BARKind is the decoder type of a base address register.
type BARKind uint8

const (
	// BARMem32 is a 32-bit memory BAR.
	BARMem32 BARKind = iota + 1
	// BARMem64 is a 64-bit memory BAR; it uses two BAR registers (i, i+1).
	BARMem64
	// BARIO is an I/O port BAR.
	BARIO
)

func (k BARKind) String() string {
	switch k {
	case BARMem32:
		return "mem32"
	case BARMem64:
		return "mem64"
	case BARIO:
		return "io"
	}
	return fmt.Sprintf("BARKind(%d)", uint8(k))
}

// BAR describes one base address register: its decoder type and size, and
// the handlers that answer accesses inside it. Each region is mapped on the
// VM's MMIO (or PIO) bus at BAR address + Offset whenever the BAR decodes
// (command register enable, a valid address, upstream bridges forwarding);
// parts of the BAR no region covers read as all ones.
type BAR struct {
	Kind BARKind
	// Size is a power of two: at least 16 bytes for memory, 4..256 for I/O.
	Size         uint64
	Prefetchable bool
	Regions      []Region
}

// Region is a handler inside a BAR.
type Region struct {
	Name         string
	Offset, Size uint64
	Dev          devices.Device
	// Mapped, when set, is called after the region is mapped at gpa (true)
	// or unmapped from it (false), e.g. to (de)register a KVM ioeventfd on
	// a notification address. It runs with the Root's lock held and must
	// not access the function's configuration space.
	Mapped func(gpa uint64, mapped bool)
}

// Capability is one entry of the capability list.
type Capability struct {
	ID uint8
	// Data is the capability's initial contents from its ID byte on, so
	// offsets match the specification's structure layouts; bytes 0 and 1
	// (ID, next pointer) are filled in. len(Data) >= 2.
	Data []byte
	// Writable has a 1 for every bit the guest may change, byte for byte
	// over Data; nil makes the capability read-only.
	Writable []byte
	// Read, when set, runs before a guest read of [off, off+size) inside
	// the capability and may update cap, the live bytes (off counts from
	// the ID byte; bytes 0 and 1 must stay as they are). Write runs after
	// a guest write there has been applied through Writable. Both run with
	// the function's lock held: they may
	// call the lock-free methods (Command, BusMaster, SetINTx, MSIX.Notify)
	// and the device's own code, never Read/Write of this Config.
	Read  func(cap []byte, off, size int)
	Write func(cap []byte, off, size int)
}

// Config is a function's configuration space: 256 bytes with, per byte, a
// mask of the bits the guest may write and a mask of the write-1-to-clear
// bits, plus the BAR, capability and interrupt state behind them.
//
// Config.Read and Config.Write are safe for concurrent use. Command,
// BusMaster and SetINTx never take the configuration lock, so device code
// may call them while holding its own lock.
type Config struct {
	mu    sync.Mutex
	data  [ConfigSize]byte
	wmask [ConfigSize]byte
	w1c   [ConfigSize]byte

	layout  uint8 // HeaderTypeNormal or HeaderTypeBridge
	pin     uint8 // Interrupt Pin, read-only
	bars    [6]*barState
	caps    []*capState
	nextCap int
	msix    *MSIX
	msixCap int

	attached atomic.Bool
	cmd      atomic.Uint32 // mirror of the command register
	intx     intxState
}

type capState struct {
	Capability
	off int
}

// barState is a BAR and where its regions are mapped. The mapping fields
// are owned by the Root (guarded by its lock).
type barState struct {
	BAR
	index    int
	regions  []regionState
	decoding bool   // the BAR decodes at `at` (all forwarding conditions hold)
	at       uint64 // its address while decoding
}

type regionState struct {
	Region
	mapped     bool
	at         uint64
	on         *devices.Bus
	refused    uint64 // address whose mapping failed, so it is logged once
	refusedSet bool
}

// NewConfig returns a type 0 (endpoint) configuration space for h. Add
// BARs and capabilities before the function is attached to a bus.
func NewConfig(h Header) (*Config, error) {
	c, err := newConfig(h, HeaderTypeNormal)
	if err != nil {
		return nil, err
	}
	binary.LittleEndian.PutUint16(c.data[RegSubsysVendorID:], h.SubsysVendorID)
	binary.LittleEndian.PutUint16(c.data[RegSubsysID:], h.SubsysID)
	return c, nil
}

func newConfig(h Header, layout uint8) (*Config, error) {
	if h.VendorID == 0xFFFF || h.VendorID == 0 {
		return nil, fmt.Errorf("vendor ID %#04x: %w", h.VendorID, ErrInvalid)
	}
	if h.Class > 0xFFFFFF {
		return nil, fmt.Errorf("class %#x is wider than 24 bits: %w", h.Class, ErrInvalid)
	}
	if h.InterruptPin > PinD {
		return nil, fmt.Errorf("interrupt pin %d: %w", h.InterruptPin, ErrInvalid)
	}
	c := &Config{layout: layout, pin: h.InterruptPin, nextCap: FirstCapOffset}
	le := binary.LittleEndian
	le.PutUint16(c.data[RegVendorID:], h.VendorID)
	le.PutUint16(c.data[RegDeviceID:], h.DeviceID)
	c.data[RegRevision] = h.Revision
	c.data[RegClassProg] = byte(h.Class)
	c.data[RegClassProg+1] = byte(h.Class >> 8)
	c.data[RegClassProg+2] = byte(h.Class >> 16)
	c.data[RegHeaderType] = layout
	c.data[RegInterruptPin] = h.InterruptPin
	c.setMask16(RegCommand, cmdWritableMask)
	le.PutUint16(c.w1c[RegStatus:], statusW1C)
	c.wmask[RegCacheLineSize] = 0xFF
	c.wmask[RegLatencyTimer] = 0xFF
	c.wmask[RegInterruptLine] = 0xFF
	return c, nil
}

func (c *Config) setMask16(off int, m uint16) {
	binary.LittleEndian.PutUint16(c.wmask[off:], m)
}

func (c *Config) setMask32(off int, m uint32) {
	binary.LittleEndian.PutUint32(c.wmask[off:], m)
}

func (c *Config) u16(off int) uint16 { return binary.LittleEndian.Uint16(c.data[off:]) }
func (c *Config) u32(off int) uint32 { return binary.LittleEndian.Uint32(c.data[off:]) }

// PCIConfig makes a bare *Config a Function (functions without behaviour
// beyond their configuration space and BARs).
func (c *Config) PCIConfig() *Config { return c }

// numBARs is 6 for endpoints and 2 for bridges.
func (c *Config) numBARs() int {
	if c.layout == HeaderTypeBridge {
		return 2
	}
	return 6
}

// SetBAR defines BAR i (for BARMem64, registers i and i+1).
func (c *Config) SetBAR(i int, b BAR) error {
	if c.attached.Load() {
		return fmt.Errorf("BAR %d: function already attached: %w", i, ErrInvalid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	regs := 1
	if b.Kind == BARMem64 {
		regs = 2
	}
	if i < 0 || i+regs > c.numBARs() {
		return fmt.Errorf("BAR %d (%s): the header has %d BAR registers: %w", i, b.Kind, c.numBARs(), ErrInvalid)
	}
	for j, bs := range c.bars {
		if bs == nil {
			continue
		}
		last := j
		if bs.Kind == BARMem64 {
			last++
		}
		if i <= last && j <= i+regs-1 {
			return fmt.Errorf("BAR %d: register already used by BAR %d: %w", i, j, ErrInvalid)
		}
	}
	if bits.OnesCount64(b.Size) != 1 {
		return fmt.Errorf("BAR %d: size %#x is not a power of two: %w", i, b.Size, ErrInvalid)
	}
	var low uint32
	switch b.Kind {
	case BARMem32, BARMem64:
		if b.Size < 16 || (b.Kind == BARMem32 && b.Size > 1<<31) {
			return fmt.Errorf("BAR %d: %s size %#x out of range: %w", i, b.Kind, b.Size, ErrInvalid)
		}
		if b.Kind == BARMem64 {
			low |= barMemType64
		}
		if b.Prefetchable {
			low |= barPrefetchable
		}
	case BARIO:
		if b.Size < 4 || b.Size > 256 || b.Prefetchable {
			return fmt.Errorf("BAR %d: I/O size %#x must be 4..256 and not prefetchable: %w", i, b.Size, ErrInvalid)
		}
		low |= barIOSpace
	default:
		return fmt.Errorf("BAR %d: unknown kind %d: %w", i, b.Kind, ErrInvalid)
	}
	bs := &barState{BAR: b, index: i}
	bs.Regions = append([]Region(nil), b.Regions...)
	if err := checkRegions(bs); err != nil {
		return err
	}
	off := RegBAR0 + 4*i
	binary.LittleEndian.PutUint32(c.data[off:], low)
	// Sizing: the address bits below the size are read-only zeros, so a
	// write of all ones reads back as the size mask (with the type bits).
	c.setMask32(off, uint32(^(b.Size-1))&^0xF)
	if b.Kind == BARIO {
		c.setMask32(off, uint32(^(b.Size-1))&barIOMask)
	}
	if b.Kind == BARMem64 {
		c.setMask32(off+4, uint32(^(b.Size-1)>>32))
	}
	c.bars[i] = bs
	return nil
}

func checkRegions(bs *barState) error {
	bs.regions = bs.regions[:0]
	for k, r := range bs.Regions {
		if r.Size == 0 || r.Offset+r.Size < r.Offset || r.Offset+r.Size > bs.Size || r.Dev == nil {
			return fmt.Errorf("BAR %d region %q [%#x, +%#x) is empty, has no handler or exceeds the %#x-byte BAR: %w",
				bs.index, r.Name, r.Offset, r.Size, bs.Size, ErrInvalid)
		}
		for _, o := range bs.Regions[:k] {
			if r.Offset < o.Offset+o.Size && o.Offset < r.Offset+r.Size {
				return fmt.Errorf("BAR %d regions %q and %q overlap: %w", bs.index, r.Name, o.Name, ErrInvalid)
			}
		}
		bs.regions = append(bs.regions, regionState{Region: r})
	}
	return nil
}

// AddCapability appends c to the capability list and returns its offset.
func (c *Config) AddCapability(capab Capability) (int, error) {
	if c.attached.Load() {
		return 0, fmt.Errorf("capability %#02x: function already attached: %w", capab.ID, ErrInvalid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addCapability(capab)
}

func (c *Config) addCapability(capab Capability) (int, error) {
	n := len(capab.Data)
	if n < 2 || (capab.Writable != nil && len(capab.Writable) != n) {
		return 0, fmt.Errorf("capability %#02x: %d data bytes, %d mask bytes: %w", capab.ID, n, len(capab.Writable), ErrInvalid)
	}
	off := c.nextCap
	if off+n > ConfigSize {
		return 0, fmt.Errorf("capability %#02x of %d bytes does not fit at %#x: %w", capab.ID, n, off, ErrInvalid)
	}
	cs := &capState{Capability: capab, off: off}
	cs.Data = append([]byte(nil), capab.Data...)
	copy(c.data[off:], cs.Data)
	c.data[off] = capab.ID
	c.data[off+1] = 0
	for k := 2; k < n && capab.Writable != nil; k++ {
		c.wmask[off+k] = capab.Writable[k]
	}
	if len(c.caps) == 0 {
		c.data[RegCapPtr] = byte(off)
		c.data[RegStatus] |= StatusCapList
	} else {
		c.data[c.caps[len(c.caps)-1].off+1] = byte(off)
	}
	c.caps = append(c.caps, cs)
	c.nextCap = off + (n+3)&^3
	return off, nil
}

// Command is the command register (lock-free).
func (c *Config) Command() uint16 { return uint16(c.cmd.Load()) }

// BusMaster reports whether the guest let the function master the bus
// (DMA and MSI writes): a device must not touch guest memory without it.
func (c *Config) BusMaster() bool { return c.Command()&CmdBusMaster != 0 }

// MSIX is the function's MSI-X capability, or nil.
func (c *Config) MSIX() *MSIX { return c.msix }

// Read reads len(data) bytes at off. Offsets beyond the 256 bytes of a
// conventional function (ECAM reaches 4096) read as zeros: an empty
// extended capability list.
func (c *Config) Read(off int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if off < 0 || off+len(data) > ExtConfigSize {
		fill(data, 0xFF)
		return
	}
	for _, cs := range c.caps {
		if cs.Read != nil {
			if lo, hi := max(off, cs.off), min(off+len(data), cs.off+len(cs.Data)); lo < hi {
				cs.Read(c.data[cs.off:cs.off+len(cs.Data)], lo-cs.off, hi-lo)
			}
		}
	}
	for i := range data {
		data[i] = c.byteAt(off + i)
	}
}

// byteAt returns one byte as the guest sees it: zeros past the
// conventional space and the live interrupt status bit.
func (c *Config) byteAt(o int) byte {
	if o >= ConfigSize {
		return 0
	}
	v := c.data[o]
	if o == RegStatus && c.intx.status() {
		v |= StatusINTx
	}
	return v
}

// Write writes data at off through the per-byte masks: read-only bits keep
// their value, write-1-to-clear bits clear where data has ones.
func (c *Config) Write(off int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if off < 0 || off+len(data) > ConfigSize {
		return // nothing writable beyond the conventional space
	}
	for i, v := range data {
		o := off + i
		c.data[o] = ((c.data[o] &^ c.wmask[o]) | (v & c.wmask[o])) &^ (v & c.w1c[o])
	}
	end := off + len(data)
	for _, cs := range c.caps {
		if cs.Write != nil {
			if lo, hi := max(off, cs.off), min(end, cs.off+len(cs.Data)); lo < hi {
				cs.Write(c.data[cs.off:cs.off+len(cs.Data)], lo-cs.off, hi-lo)
			}
		}
	}
	if off < RegCommand+2 && end > RegCommand {
		c.cmd.Store(uint32(c.u16(RegCommand)))
	}
	c.intx.setMasked(c.intxMasked())
}

// intxMasked reports whether the function may not drive INTx: the command
// register's INTx disable, or MSI-X enabled (PCI 3.0 §6.8.2).
func (c *Config) intxMasked() bool {
	if c.u16(RegCommand)&CmdINTxDisable != 0 {
		return true
	}
	return c.msix != nil && c.data[c.msixCap+3]&(msixCtlEnable>>8) != 0
}

// Bytes returns the configuration space as a guest read would, without
// running capability read hooks (for dumps).
func (c *Config) Bytes() [ConfigSize]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b [ConfigSize]byte
	for i := range b {
		b[i] = c.byteAt(i)
	}
	return b
}

// write32 is a masked 32-bit write, as firmware does through a
// configuration cycle.
func (c *Config) write32(off int, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	c.Write(off, b[:])
}

func (c *Config) write16(off int, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	c.Write(off, b[:])
}

func (c *Config) write8(off int, v uint8) { c.Write(off, []byte{v}) }

// barAddress decodes BAR bs's current address; ok is false when the value
// cannot be decoded (zero, the sizing pattern, past the address space).
// Called with c.mu held.
func (c *Config) barAddress(bs *barState) (addr uint64, ok bool) {
	off := RegBAR0 + 4*bs.index
	lo := c.u32(off)
	switch bs.Kind {
	case BARIO:
		addr = uint64(lo & barIOMask)
		// x86 has 64 KiB of ports.
		ok = addr != 0 && addr+bs.Size <= 1<<16
	case BARMem32:
		addr = uint64(lo & barMemMask)
		// A BAR ending at 4 GiB is what sizing leaves behind (QEMU's rule
		// too): treat it as unassigned rather than map over the APICs.
		ok = addr != 0 && addr+bs.Size < 1<<32
	case BARMem64:
		addr = uint64(lo&barMemMask) | uint64(c.u32(off+4))<<32
		ok = addr != 0 && addr+bs.Size-1 > addr && addr+bs.Size-1 < ^uint64(0)
		// Half-programmed or sizing patterns end near the top of the
		// address space; nothing there is guest-physical.
		ok = ok && addr < 1<<52
	}
	return addr, ok
}

// Attached reports whether the function is on a bus.
func (c *Config) Attached() bool { return c.attached.Load() }

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}
