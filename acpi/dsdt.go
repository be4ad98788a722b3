package acpi

import (
	"fmt"

	"github.com/kvmm/kvmm/layout"
)

// dsdtRevision 2 makes AML integers 64 bits wide.
const dsdtRevision = 2

// pciConfigPorts is the CF8/CFC configuration mechanism the host bridge
// consumes; the I/O windows it forwards leave that hole.
const (
	pciConfigPort    = 0xCF8
	pciConfigPortLen = 8
)

// buildDSDT writes the sleep-state packages, then the \_SB devices.
func buildDSDT(cfg Config) ([]byte, error) {
	var terms []Term
	if cfg.S3 {
		terms = append(terms, sleepPackage(`\_S3_`, SlpTypS3))
	}
	terms = append(terms, sleepPackage(`\_S5_`, SlpTypS5))

	sb := []Term{com1()}
	if cfg.PCI {
		sb = append(sb, pci0(cfg), motherboardResources(cfg.PCIBuses))
	}
	terms = append(terms, Scope(`\_SB`, sb...))

	aml, err := Encode(terms...)
	if err != nil {
		return nil, fmt.Errorf("encode AML: %w", err)
	}
	t := newTable("DSDT", dsdtRevision, headerLen+len(aml))
	copy(t[headerLen:], aml)
	setChecksum(t, 9)
	return t, nil
}

// sleepPackage is Name(\_Sx_, Package{typ, typ, 0, 0}): SLP_TYPa, SLP_TYPb
// and two reserved elements. The values are the ones PM decodes from
// PM1a_CNT.SLP_TYP, so the table and the register model cannot disagree.
func sleepPackage(name string, typ uint64) Term {
	return Name(name, Package(Integer(typ), Integer(typ), Integer(0), Integer(0)))
}

// PRTRoute is one PCI0._PRT entry: INTx pin (0 = INTA) of a bus-0 slot
// wired to a global system interrupt of the IOAPIC.
type PRTRoute struct {
	Slot, Pin uint8
	GSI       uint32
}

// Window is an inclusive guest-physical address range.
type Window struct {
	Start, End uint64
}

// pci0 is the PCI Express host bridge of segment 0: it forwards all I/O
// ports except the CF8 configuration ports it consumes itself, the 32-bit
// MMIO window, the 64-bit window if any, and buses 0..PCIBuses-1; its _PRT
// routes bus 0's INTx pins (behind a bridge, the OS applies the standard
// swizzle to reach a bus-0 entry).
func pci0(cfg Config) Term {
	crs := []Resource{
		WordBusNumber(0, uint16(cfg.PCIBuses-1)),
		IO(pciConfigPort, pciConfigPort, 1, pciConfigPortLen),
		WordIO(0x0000, pciConfigPort-1),
		WordIO(0x0D00, 0xFFFF),
		DWordMemory(layout.PCIMMIO32Start, layout.PCIMMIO32End, NonCacheable),
	}
	if w := cfg.PCIMMIO64; w != nil {
		crs = append(crs, QWordMemory(w.Start, w.End, Cacheable))
	}
	terms := []Term{
		Name("_HID", EisaID("PNP0A08")),
		Name("_CID", EisaID("PNP0A03")),
		Name("_UID", Integer(0)),
		Name("_SEG", Integer(0)),
		Name("_BBN", Integer(0)),
		Name("_CRS", ResourceTemplate(crs...)),
	}
	if len(cfg.PRT) > 0 {
		entries := make([]Term, 0, len(cfg.PRT))
		for _, r := range cfg.PRT {
			// Package{Address (slot << 16 | 0xFFFF: any function), Pin,
			// Source (0: a GSI, not a link device), Source Index (the GSI)}.
			entries = append(entries, Package(Integer(uint64(r.Slot)<<16|0xFFFF), Integer(uint64(r.Pin)), Integer(0), Integer(uint64(r.GSI))))
		}
		terms = append(terms, Name("_PRT", Package(entries...)))
	}
	return Device("PCI0", terms...)
}

// motherboardResources reserves the ECAM window as a PNP0C02 resource.
// Linux accepts an MCFG region only if the e820 map or such a motherboard
// resource reserves it; declaring it here keeps ECAM usable whatever the
// e820 map says.
func motherboardResources(buses int) Term {
	return Device("MRES",
		Name("_HID", EisaID("PNP0C02")),
		Name("_UID", Integer(0)),
		Name("_CRS", ResourceTemplate(
			Memory32Fixed(true, layout.ECAMStart, uint32(buses)*ecamBusLen),
		)),
	)
}

// com1 describes the 16550 at the PC's first serial port, so the guest's
// 8250_pnp driver binds it instead of relying on legacy probing.
func com1() Term {
	return Device("COM1",
		Name("_HID", EisaID("PNP0501")),
		Name("_UID", Integer(1)),
		Name("_CRS", ResourceTemplate(
			IO(layout.COM1Port, layout.COM1Port, 1, 8),
			IRQNoFlags(layout.COM1IRQ),
		)),
	)
}
