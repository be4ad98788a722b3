package pci

import (
	"log/slog"
	"sync"

	"github.com/kvmm/kvmm/devices"
)

// Legacy INTx wiring. Every slot of bus 0 has its four pins wired to IOAPIC
// inputs 16-23 with a fixed rotation, and a device behind a PCI-to-PCI
// bridge reaches bus 0 through the standard bridge swizzle (PCI-to-PCI
// Bridge 1.2 §9.1), exactly as Linux computes it when no _PRT describes the
// secondary bus (pci_swizzle_interrupt_pin). The DSDT's _PRT for PCI0 must
// list PRT(): then Linux and the hardware model agree on every GSI.
const (
	// INTxGSIBase and INTxGSICount are the IOAPIC inputs PCI INTx uses;
	// GSIs 0-15 are the ISA interrupts.
	INTxGSIBase  = 16
	INTxGSICount = 8
	slotsPerBus  = 32
	fnsPerSlot   = 8
)

// INTxGSI is the GSI that pin (PinA..PinD) of a bus-0 slot is wired to.
func INTxGSI(slot, pin uint8) uint32 {
	return INTxGSIBase + (uint32(slot)+uint32(pin-1))%INTxGSICount
}

// SwizzlePin is the pin on a bridge's primary side that pin of the device
// in slot (on the bridge's secondary bus) is wired to.
func SwizzlePin(slot, pin uint8) uint8 { return (pin-1+slot)%4 + 1 }

// PRTEntry is one _PRT package for bus 0: Address = Slot<<16 | 0xFFFF,
// Pin (0 = INTA .. 3 = INTD, ACPI's numbering), Source = 0 and
// SourceIndex = GSI (a hard-wired GSI, level-triggered, active low).
type PRTEntry struct {
	Slot uint8
	Pin  uint8
	GSI  uint32
}

// PRT lists the routing of every slot and pin of bus 0, for the DSDT.
func PRT() []PRTEntry {
	var prt []PRTEntry
	for slot := uint8(0); slot < slotsPerBus; slot++ {
		for pin := uint8(PinA); pin <= PinD; pin++ {
			prt = append(prt, PRTEntry{Slot: slot, Pin: pin - 1, GSI: INTxGSI(slot, pin)})
		}
	}
	return prt
}

// sharedLine is one IOAPIC input that several functions' pins may drive:
// PCI INTx is level-triggered and wired-OR, so the line is high while any
// function drives it.
type sharedLine struct {
	gsi   uint32
	irq   devices.IRQLine
	log   *slog.Logger
	mu    sync.Mutex
	count int
}

func (l *sharedLine) drive(up bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	before := l.count > 0
	if up {
		l.count++
	} else if l.count > 0 {
		l.count--
	}
	if now := l.count > 0; now != before {
		if err := l.irq.SetLevel(now); err != nil {
			l.log.Warn("PCI INTx line", "gsi", l.gsi, "level", now, "err", err)
		}
	}
}

// intxState is a function's INTx pin: what the device asks for, whether
// the function may drive the pin (INTx disable, MSI-X), and whether it
// currently drives its shared line. Its lock is a leaf below the config
// lock, so a device may call SetINTx while holding its own lock.
type intxState struct {
	mu       sync.Mutex
	asserted bool
	masked   bool
	driving  bool
	line     *sharedLine
}

func (s *intxState) status() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asserted
}

func (s *intxState) setMasked(m bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.masked = m
	s.update()
}

func (s *intxState) connect(l *sharedLine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.line = l
	s.update()
}

func (s *intxState) update() {
	want := s.asserted && !s.masked && s.line != nil
	if want != s.driving {
		s.driving = want
		s.line.drive(want)
	}
}

// SetINTx asserts (true) or deasserts the function's interrupt pin, with
// level semantics: the pin stays asserted until the device deasserts it
// (virtio: when the guest reads the ISR). The interrupt status bit follows
// it; the line itself is driven only while the command register's INTx
// disable and MSI-X are off. Lock-free with respect to the configuration
// space. A function without an interrupt pin ignores it.
func (c *Config) SetINTx(asserted bool) {
	if c.pin == PinNone {
		return
	}
	c.intx.mu.Lock()
	defer c.intx.mu.Unlock()
	c.intx.asserted = asserted
	c.intx.update()
}

// INTxAsserted reports what the device last asked for with SetINTx.
func (c *Config) INTxAsserted() bool { return c.intx.status() }
