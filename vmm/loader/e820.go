package loader

import (
	"errors"
	"fmt"
	"slices"

	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/memory"
)

// E820 entry types, as Linux numbers them (arch/x86/include/asm/e820/types.h).
// The PVH memmap types (XEN_HVM_MEMMAP_TYPE_*) use the same numbers.
const (
	E820RAM      = 1
	E820Reserved = 2
	E820ACPI     = 3
	E820NVS      = 4
)

// E820Entry is one range of the guest memory map.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// maxE820Entries is E820_MAX_ENTRIES_ZEROPAGE: boot_params.e820_table has
// room for 128 entries.
const maxE820Entries = 128

// MemoryMap builds the memory map a PC firmware would report for mem:
//
//   - usable RAM [0, layout.EBDAStart);
//   - reserved [layout.EBDAStart, 1 MiB): EBDA, VGA hole and BIOS area,
//     which holds the ACPI tables (layout.ACPIStart..ACPIEnd);
//   - usable RAM from 1 MiB to the end of low RAM;
//   - reserved for the PCIe ECAM window (layout.ECAMStart, ECAMSize), as
//     real firmware does: Linux only trusts the MCFG table when the window
//     is reserved in the E820 map (pci_mmcfg "not reserved in E820");
//   - usable RAM above 4 GiB, if any.
//
// Entries are sorted by address.
func MemoryMap(mem *memory.Guest) []E820Entry {
	var m []E820Entry
	for _, r := range mem.Regions() {
		if r.GPA != 0 {
			m = append(m, E820Entry{Addr: r.GPA, Size: r.Size(), Type: E820RAM})
			continue
		}
		end := r.End()
		m = append(m, E820Entry{Addr: 0, Size: min(end, layout.EBDAStart), Type: E820RAM})
		if end > layout.EBDAStart {
			m = append(m, E820Entry{Addr: layout.EBDAStart, Size: layout.HighMemStart - layout.EBDAStart, Type: E820Reserved})
		}
		if end > layout.HighMemStart {
			m = append(m, E820Entry{Addr: layout.HighMemStart, Size: end - layout.HighMemStart, Type: E820RAM})
		}
	}
	m = append(m, E820Entry{Addr: layout.ECAMStart, Size: layout.ECAMSize, Type: E820Reserved})
	slices.SortFunc(m, func(a, b E820Entry) int {
		switch {
		case a.Addr < b.Addr:
			return -1
		case a.Addr > b.Addr:
			return 1
		}
		return 0
	})
	return m
}

// checkMemMap refuses a map the boot structures cannot carry or the kernel
// would misread.
func checkMemMap(m []E820Entry) error {
	if len(m) == 0 {
		return errors.New("memory map is empty")
	}
	if len(m) > maxE820Entries {
		return fmt.Errorf("memory map has %d entries, at most %d fit in boot_params", len(m), maxE820Entries)
	}
	for i, e := range m {
		if e.Size == 0 || e.Addr+e.Size < e.Addr {
			return fmt.Errorf("memory map entry %d [%#x, +%#x): empty or wraps", i, e.Addr, e.Size)
		}
		if e.Type == 0 {
			return fmt.Errorf("memory map entry %d [%#x, +%#x): type 0", i, e.Addr, e.Size)
		}
	}
	return nil
}
