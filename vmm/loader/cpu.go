package loader

import (
	"encoding/binary"
	"fmt"

	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/memory"
)

// Segment selectors of the boot GDT. boot.rst requires __BOOT_CS (0x10) and
// __BOOT_DS (0x18) for the 32- and 64-bit entries; the PVH ABI leaves the
// selectors open, so it gets the same ones.
const (
	SelectorCode = 0x10
	SelectorData = 0x18
)

// Boot GDT descriptors, flat (base 0, limit 4 GiB, granularity 4 KiB). The
// accessed bit is preset so the CPU never writes the GDT back. A vCPU setup
// loading segment registers directly must use matching hidden state.
const (
	// GDTCode64 is a 64-bit code segment: P, DPL 0, S, type 0xB
	// (execute/read, accessed), L = 1, D = 0.
	GDTCode64 uint64 = 0x00AF9B000000FFFF
	// GDTCode32 is a 32-bit code segment: as GDTCode64 with L = 0, D = 1.
	GDTCode32 uint64 = 0x00CF9B000000FFFF
	// GDTData is a read/write data segment: type 0x3 (read/write, accessed),
	// B = 1.
	GDTData uint64 = 0x00CF93000000FFFF
)

// gdtEntries is the GDT size in descriptors: null, unused, code, data.
const gdtEntries = 4

// writeGDT installs the boot GDT at layout.GDTAddr with code descriptor code
// at SelectorCode and data at SelectorData, returning base and limit.
func writeGDT(mem *memory.Guest, code uint64) (uint64, uint16, error) {
	var gdt [gdtEntries * 8]byte
	binary.LittleEndian.PutUint64(gdt[SelectorCode:], code)
	binary.LittleEndian.PutUint64(gdt[SelectorData:], GDTData)
	if err := mem.Write(layout.GDTAddr, gdt[:]); err != nil {
		return 0, 0, fmt.Errorf("write boot GDT at %#x: %w", layout.GDTAddr, err)
	}
	return layout.GDTAddr, uint16(len(gdt) - 1), nil
}

// Page-table entry bits.
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	ptePageSize = 1 << 7 // in a PD entry: maps a 2 MiB page
)

// identityMapSize is what the boot page tables map: 4 GiB, enough for the
// kernel, boot_params and command line wherever Load puts them (boot.rst:
// "a range with setup_header.init_size from start address of loaded kernel
// and zero page and command line buffer get ident mapping").
const identityMapSize = 4 * layout.GiB

// writePageTables builds identity tables with 2 MiB pages: one PML4 entry,
// four PDPT entries, four page directories of 512 entries.
func writePageTables(mem *memory.Guest) error {
	const pdCount = identityMapSize / layout.GiB
	var page [layout.PageSize]byte
	binary.LittleEndian.PutUint64(page[0:], layout.PDPTAddr|ptePresent|pteWritable)
	if err := mem.Write(layout.PML4Addr, page[:]); err != nil {
		return fmt.Errorf("write PML4 at %#x: %w", layout.PML4Addr, err)
	}
	clear(page[:])
	for i := range uint64(pdCount) {
		binary.LittleEndian.PutUint64(page[i*8:], (layout.PDAddr+i*layout.PageSize)|ptePresent|pteWritable)
	}
	if err := mem.Write(layout.PDPTAddr, page[:]); err != nil {
		return fmt.Errorf("write PDPT at %#x: %w", layout.PDPTAddr, err)
	}
	for d := range uint64(pdCount) {
		for i := range uint64(512) {
			addr := d*layout.GiB + i*2*layout.MiB
			binary.LittleEndian.PutUint64(page[i*8:], addr|ptePresent|pteWritable|ptePageSize)
		}
		pd := layout.PDAddr + d*layout.PageSize
		if err := mem.Write(pd, page[:]); err != nil {
			return fmt.Errorf("write page directory at %#x: %w", pd, err)
		}
	}
	return nil
}
