package loader

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/memory"
)

// ELF constants (System V gABI).
const (
	elfMagic      = "\x7fELF"
	elfClass32    = 1
	elfClass64    = 2
	elfDataLSB    = 1
	elfVersion    = 1
	etExec        = 2
	etDyn         = 3
	emI386        = 3
	emX86_64      = 62
	ptLoad        = 1
	ptNote        = 4
	pnXNum        = 0xffff // e_phnum escape: the real count is in a section header
	elf32HdrSize  = 52
	elf64HdrSize  = 64
	elf32PhdrSize = 32
	elf64PhdrSize = 56
)

// Bounds on what the loader accepts from an ELF file, so a hostile header
// cannot make it allocate or loop without limit. A Linux vmlinux has about
// five program headers and a few dozen notes.
const (
	maxProgHeaders = 64
	maxNoteSegment = 64 * layout.KiB
	maxNotes       = 512
)

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY (xen/include/public/
// elfnote.h): the 32-bit physical entry point of a PVH kernel, in a note
// owned by "Xen".
const xenElfnotePhys32Entry = 18

// struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h),
// version 1: the fields after rsdp_paddr exist from version 1 on.
const (
	hvmStartMagic       = 0x336ec578
	hvmStartVersion     = 1
	hvmStartInfoSize    = 0x38
	hsiMagic            = 0x00 // u32
	hsiVersion          = 0x04 // u32
	hsiFlags            = 0x08 // u32
	hsiNrModules        = 0x0c // u32
	hsiModlistPaddr     = 0x10 // u64
	hsiCmdlinePaddr     = 0x18 // u64
	hsiRsdpPaddr        = 0x20 // u64
	hsiMemmapPaddr      = 0x28 // u64
	hsiMemmapEntries    = 0x30 // u32
	hvmMemmapEntrySize  = 24   // struct hvm_memmap_table_entry: addr, size, type, reserved
	hvmModlistEntrySize = 32   // struct hvm_modlist_entry: paddr, size, cmdline_paddr, reserved
	// pvhInfoEnd bounds the memmap and modlist: they must not run into the
	// next boot structure (the zero page area).
	pvhInfoEnd = layout.ZeroPageAddr
)

// elfSegment is a validated PT_LOAD program header.
type elfSegment struct {
	off, paddr, filesz, memsz uint64
}

// pvhELF is what Load needs from a PVH kernel.
type pvhELF struct {
	entry uint64 // from XEN_ELFNOTE_PHYS32_ENTRY
	loads []elfSegment
}

// parseELF validates an x86 ELF kernel and finds its PVH entry note.
func parseELF(r io.ReaderAt, size int64) (*pvhELF, error) {
	if size < elf32HdrSize {
		return nil, badf("ELF truncated: %d bytes, shorter than an ELF header", size)
	}
	hdr := make([]byte, min(size, elf64HdrSize))
	if err := readFull(r, 0, hdr); err != nil {
		return nil, fmt.Errorf("read ELF header: %w", err)
	}
	if string(hdr[:4]) != elfMagic {
		return nil, badf("not an ELF file")
	}
	class := hdr[4]
	if class != elfClass32 && class != elfClass64 {
		return nil, badf("ELF class %d is neither 32- nor 64-bit", class)
	}
	if hdr[5] != elfDataLSB {
		return nil, badf("ELF is not little-endian (EI_DATA %d), not an x86 kernel", hdr[5])
	}
	if hdr[6] != elfVersion {
		return nil, badf("ELF version %d", hdr[6])
	}
	le := binary.LittleEndian
	if t := le.Uint16(hdr[16:]); t != etExec && t != etDyn {
		return nil, badf("ELF type %d is not an executable", t)
	}
	if m := le.Uint16(hdr[18:]); m != emI386 && m != emX86_64 {
		return nil, badf("ELF is for machine %d, not x86 (%d or %d)", m, emI386, emX86_64)
	}

	var phoff uint64
	var phentsize, phnum, minEnt int
	if class == elfClass64 {
		if len(hdr) < elf64HdrSize {
			return nil, badf("ELF64 truncated: %d bytes, shorter than an ELF64 header", size)
		}
		phoff = le.Uint64(hdr[32:])
		phentsize, phnum, minEnt = int(le.Uint16(hdr[54:])), int(le.Uint16(hdr[56:])), elf64PhdrSize
	} else {
		phoff = uint64(le.Uint32(hdr[28:]))
		phentsize, phnum, minEnt = int(le.Uint16(hdr[42:])), int(le.Uint16(hdr[44:])), elf32PhdrSize
	}
	if phnum == 0 || phnum == pnXNum || phnum > maxProgHeaders {
		return nil, badf("ELF has %d program headers, accepted 1..%d", phnum, maxProgHeaders)
	}
	if phentsize < minEnt {
		return nil, badf("ELF program header size %d, want at least %d", phentsize, minEnt)
	}
	tableSize := uint64(phnum) * uint64(phentsize)
	if !inFile(phoff, tableSize, size) {
		return nil, badf("ELF program headers [%#x, +%#x) outside the %d-byte file", phoff, tableSize, size)
	}
	table := make([]byte, tableSize)
	if err := readFull(r, int64(phoff), table); err != nil {
		return nil, fmt.Errorf("read ELF program headers: %w", err)
	}

	k := &pvhELF{}
	foundEntry := false
	for i := range phnum {
		ph := table[i*phentsize : (i+1)*phentsize]
		var typ uint32
		var seg elfSegment
		var align uint64
		if class == elfClass64 {
			typ = le.Uint32(ph[0:])
			seg = elfSegment{off: le.Uint64(ph[8:]), paddr: le.Uint64(ph[24:]), filesz: le.Uint64(ph[32:]), memsz: le.Uint64(ph[40:])}
			align = le.Uint64(ph[48:])
		} else {
			typ = le.Uint32(ph[0:])
			seg = elfSegment{off: uint64(le.Uint32(ph[4:])), paddr: uint64(le.Uint32(ph[12:])),
				filesz: uint64(le.Uint32(ph[16:])), memsz: uint64(le.Uint32(ph[20:]))}
			align = uint64(le.Uint32(ph[28:]))
		}
		switch typ {
		case ptLoad:
			if seg.filesz > seg.memsz {
				return nil, badf("ELF segment %d: p_filesz %#x > p_memsz %#x", i, seg.filesz, seg.memsz)
			}
			if !inFile(seg.off, seg.filesz, size) {
				return nil, badf("ELF segment %d: file range [%#x, +%#x) outside the %d-byte file",
					i, seg.off, seg.filesz, size)
			}
			if seg.paddr+seg.memsz < seg.paddr {
				return nil, badf("ELF segment %d: [%#x, +%#x) wraps", i, seg.paddr, seg.memsz)
			}
			if seg.memsz > 0 {
				k.loads = append(k.loads, seg)
			}
		case ptNote:
			if foundEntry {
				continue
			}
			entry, ok, err := findPVHEntry(r, size, seg, align)
			if err != nil {
				return nil, fmt.Errorf("ELF note segment %d: %w", i, err)
			}
			k.entry, foundEntry = entry, ok
		}
	}
	if !foundEntry {
		return nil, badf("ELF kernel has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY; Linux needs CONFIG_PVH=y)")
	}
	if len(k.loads) == 0 {
		return nil, badf("ELF kernel has no loadable segment")
	}
	inside := false
	for _, s := range k.loads {
		if k.entry >= s.paddr && k.entry < s.paddr+s.memsz {
			inside = true
			break
		}
	}
	if !inside {
		return nil, badf("PVH entry %#x is outside every loadable segment", k.entry)
	}
	return k, nil
}

// inFile reports whether [off, off+n) lies inside a file of size bytes,
// without overflowing.
func inFile(off, n uint64, size int64) bool {
	return size >= 0 && off <= uint64(size) && n <= uint64(size)-off
}

// findPVHEntry scans one PT_NOTE segment for XEN_ELFNOTE_PHYS32_ENTRY.
func findPVHEntry(r io.ReaderAt, size int64, seg elfSegment, align uint64) (uint64, bool, error) {
	if seg.filesz > maxNoteSegment {
		return 0, false, badf("%d bytes, more than the %d accepted", seg.filesz, maxNoteSegment)
	}
	if !inFile(seg.off, seg.filesz, size) {
		return 0, false, badf("[%#x, +%#x) outside the %d-byte file", seg.off, seg.filesz, size)
	}
	buf := make([]byte, seg.filesz)
	if err := readFull(r, int64(seg.off), buf); err != nil {
		return 0, false, err
	}
	// Note entries are 4-byte aligned (what Linux's ELFNOTE emits); a
	// segment aligned to 8 uses 8, as the gABI says for ELF64.
	a := uint64(4)
	if align == 8 {
		a = 8
	}
	le := binary.LittleEndian
	for n, off := 0, uint64(0); off+12 <= uint64(len(buf)); n++ {
		if n >= maxNotes {
			return 0, false, badf("more than %d notes", maxNotes)
		}
		namesz, descsz, typ := uint64(le.Uint32(buf[off:])), uint64(le.Uint32(buf[off+4:])), le.Uint32(buf[off+8:])
		nameOff := off + 12
		descOff, ok := alignUp(nameOff+namesz, a)
		if !ok || descOff > uint64(len(buf)) {
			return 0, false, badf("note %d name overruns the segment", n)
		}
		next, ok := alignUp(descOff+descsz, a)
		if !ok || descOff+descsz > uint64(len(buf)) {
			return 0, false, badf("note %d descriptor overruns the segment", n)
		}
		if namesz == 4 && string(buf[nameOff:nameOff+4]) == "Xen\x00" && typ == xenElfnotePhys32Entry {
			desc := buf[descOff : descOff+descsz]
			var entry uint64
			switch descsz {
			case 4:
				entry = uint64(le.Uint32(desc))
			case 8:
				// Linux emits the note with _ASM_PTR: 8 bytes on x86_64.
				entry = le.Uint64(desc)
			default:
				return 0, false, badf("PHYS32_ENTRY note has a %d-byte value", descsz)
			}
			if entry > 0xFFFFFFFF {
				return 0, false, badf("PHYS32_ENTRY %#x is above 4 GiB", entry)
			}
			return entry, true, nil
		}
		off = next
	}
	return 0, false, nil
}

// loadPVH loads the ELF segments and builds hvm_start_info.
func loadPVH(mem *memory.Guest, p Params, memMap []E820Entry) (Entry, error) {
	k, err := parseELF(p.Kernel, p.KernelSize)
	if err != nil {
		return Entry{}, fmt.Errorf("PVH kernel: %w", err)
	}
	var kernelEnd uint64
	for i, s := range k.loads {
		// Below 1 MiB live the GDT, start info, command line and ACPI
		// tables; a segment there would be overwritten or overwrite them.
		if s.paddr < layout.HighMemStart {
			return Entry{}, fmt.Errorf("PVH kernel: %w", badf("segment at %#x is below %#x, over the boot structures",
				s.paddr, layout.HighMemStart))
		}
		if !mem.Contains(s.paddr, s.memsz) {
			return Entry{}, fmt.Errorf("PVH kernel: segment [%#x, +%#x) is not in guest RAM", s.paddr, s.memsz)
		}
		for _, o := range k.loads[:i] {
			if overlaps(s.paddr, s.memsz, o.paddr, o.memsz) {
				return Entry{}, fmt.Errorf("PVH kernel: %w", badf("segments [%#x, +%#x) and [%#x, +%#x) overlap",
					s.paddr, s.memsz, o.paddr, o.memsz))
			}
		}
		kernelEnd = max(kernelEnd, s.paddr+s.memsz)
	}
	for _, s := range k.loads {
		if err := loadInto(mem, s.paddr, p.Kernel, int64(s.off), s.filesz); err != nil {
			return Entry{}, fmt.Errorf("PVH kernel: segment at %#x: %w", s.paddr, err)
		}
		// p_memsz beyond p_filesz is bss: the kernel expects zeroes.
		bss, err := mem.Slice(s.paddr+s.filesz, s.memsz-s.filesz)
		if err != nil {
			return Entry{}, fmt.Errorf("PVH kernel: bss at %#x: %w", s.paddr+s.filesz, err)
		}
		clear(bss)
	}
	initrdAddr, err := loadInitrd(mem, p, memMap, kernelEnd, min(lowRAMEnd(mem), uint64(layout.MMIOHoleStart)), true)
	if err != nil {
		return Entry{}, fmt.Errorf("PVH kernel: %w", err)
	}
	if err := writeCmdline(mem, p.Cmdline); err != nil {
		return Entry{}, fmt.Errorf("PVH kernel: %w", err)
	}
	if err := writeStartInfo(mem, p, memMap, initrdAddr); err != nil {
		return Entry{}, fmt.Errorf("PVH kernel: %w", err)
	}
	gdtBase, gdtLimit, err := writeGDT(mem, GDTCode32)
	if err != nil {
		return Entry{}, fmt.Errorf("PVH kernel: %w", err)
	}
	return Entry{
		Mode:     ModePVH32,
		RIP:      k.entry,
		RBX:      layout.PVHStartInfoAddr,
		RSP:      layout.BootStackTop,
		GDTBase:  gdtBase,
		GDTLimit: gdtLimit,
	}, nil
}

// writeStartInfo writes hvm_start_info at layout.PVHStartInfoAddr, the
// memmap at layout.PVHMemmapAddr and, right after it, the module list with
// the initrd.
func writeStartInfo(mem *memory.Guest, p Params, memMap []E820Entry, initrdAddr uint64) error {
	le := binary.LittleEndian
	nMods := 0
	if initrdAddr != 0 {
		nMods = 1
	}
	modlistAddr := uint64(layout.PVHMemmapAddr + len(memMap)*hvmMemmapEntrySize)
	end := modlistAddr + uint64(nMods*hvmModlistEntrySize)
	if end > pvhInfoEnd {
		return fmt.Errorf("memory map of %d entries does not fit between %#x and %#x",
			len(memMap), layout.PVHMemmapAddr, pvhInfoEnd)
	}

	tbl := make([]byte, end-layout.PVHMemmapAddr)
	for i, e := range memMap {
		b := tbl[i*hvmMemmapEntrySize:]
		le.PutUint64(b[0:], e.Addr)
		le.PutUint64(b[8:], e.Size)
		// XEN_HVM_MEMMAP_TYPE_* share the E820 numbers.
		le.PutUint32(b[16:], e.Type)
	}
	if nMods == 1 {
		b := tbl[modlistAddr-layout.PVHMemmapAddr:]
		le.PutUint64(b[0:], initrdAddr)
		le.PutUint64(b[8:], uint64(p.InitrdSize))
	}
	if err := mem.Write(layout.PVHMemmapAddr, tbl); err != nil {
		return fmt.Errorf("write PVH memmap at %#x: %w", layout.PVHMemmapAddr, err)
	}

	si := make([]byte, hvmStartInfoSize)
	le.PutUint32(si[hsiMagic:], hvmStartMagic)
	le.PutUint32(si[hsiVersion:], hvmStartVersion)
	le.PutUint32(si[hsiFlags:], 0)
	le.PutUint32(si[hsiNrModules:], uint32(nMods))
	if nMods > 0 {
		le.PutUint64(si[hsiModlistPaddr:], modlistAddr)
	}
	le.PutUint64(si[hsiCmdlinePaddr:], layout.CmdlineAddr)
	le.PutUint64(si[hsiRsdpPaddr:], p.RSDPAddr)
	le.PutUint64(si[hsiMemmapPaddr:], layout.PVHMemmapAddr)
	le.PutUint32(si[hsiMemmapEntries:], uint32(len(memMap)))
	if err := mem.Write(layout.PVHStartInfoAddr, si); err != nil {
		return fmt.Errorf("write hvm_start_info at %#x: %w", layout.PVHStartInfoAddr, err)
	}
	return nil
}
