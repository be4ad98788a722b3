package acpi

import (
	"encoding/binary"

	"github.com/kvmm/kvmm/layout"
)

// MADT layout (ACPI 6.5 §5.2.12).
const (
	madtRevision     = 5
	madtLAPICAddr    = 36
	madtFlags        = 40
	madtEntries      = 44
	madtPCATCompat   = 1 << 0 // dual 8259s present: Linux masks them itself
	madtTypeLAPIC    = 0
	madtTypeIOAPIC   = 1
	madtTypeISO      = 2
	madtTypeLAPICNMI = 4
	madtLAPICLen     = 8
	madtIOAPICLen    = 12
	madtISOLen       = 10
	madtLAPICNMILen  = 6

	lapicEnabled = 1 << 0

	// MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2.
	intiConforming = 0
	intiActiveHigh = 1 << 0
	intiLevel      = 3 << 2

	// allProcessors in a LAPIC NMI entry means every processor.
	allProcessors = 0xFF
	// lint1 is the LAPIC pin wired to NMI on PCs.
	lint1 = 1
	// timerIRQ and timerGSI: the PIT's ISA IRQ 0 arrives at IOAPIC pin 2.
	timerIRQ = 0
	timerGSI = 2
)

// madtLen is the MADT size for n processors: header and the two fixed
// fields, n LAPICs, one IOAPIC, two overrides, one LAPIC NMI.
func madtLen(n int) int {
	return madtEntries + n*madtLAPICLen + madtIOAPICLen + 2*madtISOLen + madtLAPICNMILen
}

// buildMADT describes n processors with APIC ids (and ACPI UIDs) 0..n-1,
// the in-kernel IOAPIC with id n, so that it clashes with no LAPIC id, and
// the PC's interrupt source overrides.
func buildMADT(n int) []byte {
	t := newTable("APIC", madtRevision, madtLen(n))
	le := binary.LittleEndian
	le.PutUint32(t[madtLAPICAddr:], layout.LAPICAddr)
	le.PutUint32(t[madtFlags:], madtPCATCompat)
	e := t[madtEntries:]
	for i := 0; i < n; i++ {
		e[0], e[1], e[2], e[3] = madtTypeLAPIC, madtLAPICLen, byte(i), byte(i)
		le.PutUint32(e[4:], lapicEnabled)
		e = e[madtLAPICLen:]
	}

	e[0], e[1], e[2] = madtTypeIOAPIC, madtIOAPICLen, byte(n)
	le.PutUint32(e[4:], layout.IOAPICAddr)
	le.PutUint32(e[8:], 0) // GSI base
	e = e[madtIOAPICLen:]

	// The PIT timer is wired to pin 2 as on every PC; flags conform to the
	// ISA bus (edge, active high).
	e = putISO(e, timerIRQ, timerGSI, intiConforming)
	// The SCI is level-triggered active high (ACPI 6.5 §5.2.12.5), not ISA
	// edge: without this override the guest would program pin 9 as edge
	// and lose a level that stays asserted.
	e = putISO(e, layout.SCIIRQ, layout.SCIIRQ, intiActiveHigh|intiLevel)

	e[0], e[1], e[2] = madtTypeLAPICNMI, madtLAPICNMILen, allProcessors
	le.PutUint16(e[3:], intiConforming)
	e[5] = lint1
	setChecksum(t, 9)
	return t
}

// putISO writes an ISA interrupt source override and returns what follows.
func putISO(e []byte, irq byte, gsi uint32, flags uint16) []byte {
	e[0], e[1], e[2], e[3] = madtTypeISO, madtISOLen, 0, irq // bus 0: ISA
	binary.LittleEndian.PutUint32(e[4:], gsi)
	binary.LittleEndian.PutUint16(e[8:], flags)
	return e[madtISOLen:]
}
