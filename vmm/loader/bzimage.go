package loader

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/memory"
)

// Offsets in the bzImage file, which are also the offsets of the same fields
// in struct boot_params (the setup header sits at 0x1f1 in both).
// Names are boot.rst's; the protocol version that added a field is noted
// where Load relies on it.
const (
	hdrStart             = 0x1f1 // start of struct setup_header
	offSetupSects        = 0x1f1 // u8: setup sectors after the boot sector; 0 means 4
	offSyssize           = 0x1f4 // u32: protected-mode size in 16-byte paragraphs (2.04+)
	offVidMode           = 0x1fa // u16
	offBootFlag          = 0x1fe // u16: 0xAA55
	offJump              = 0x200 // u16: short jump; its second byte sizes the header
	offHeader            = 0x202 // u32: "HdrS"
	offVersion           = 0x206 // u16: boot protocol version, major<<8 | minor
	offTypeOfLoader      = 0x210 // u8
	offLoadflags         = 0x211 // u8
	offCode32Start       = 0x214 // u32
	offRamdiskImage      = 0x218 // u32
	offRamdiskSize       = 0x21c // u32
	offHeapEndPtr        = 0x224 // u16 (2.01+)
	offExtLoaderVer      = 0x226 // u8 (2.02+)
	offExtLoaderType     = 0x227 // u8 (2.02+)
	offCmdLinePtr        = 0x228 // u32 (2.02+)
	offInitrdAddrMax     = 0x22c // u32 (2.03+): highest address the initrd may occupy
	offKernelAlignment   = 0x230 // u32 (2.05+)
	offRelocatable       = 0x234 // u8 (2.05+)
	offXloadflags        = 0x236 // u16 (2.12+)
	offCmdlineSize       = 0x238 // u32 (2.06+): maximum command line length, NUL excluded
	offHardwareSubarch   = 0x23c // u32 (2.07+)
	offPayloadOffset     = 0x248 // u32 (2.08+)
	offPayloadLength     = 0x24c // u32 (2.08+)
	offSetupData         = 0x250 // u64 (2.09+)
	offPrefAddress       = 0x258 // u64 (2.10+)
	offInitSize          = 0x260 // u32 (2.10+)
	minHdrEnd            = 0x268 // a 2.12 header reaches at least handover_offset (0x264, 4 bytes)
	maxHdrEnd            = 0x290 // boot_params reserves 0x1f1..0x290 for the header
	bootFlagMagic        = 0xAA55
	hdrSMagic            = "HdrS"
	minProtocol          = 0x020c     // 2.12: xloadflags, so XLF_KERNEL_64 can be checked
	defaultInitrdAddrMax = 0x37FFFFFF // boot.rst: the value for protocols before 2.03
	sectorSize           = 512
)

// loadflags and xloadflags bits (boot.rst).
const (
	loadedHigh  = 1 << 0 // LOADED_HIGH: protected-mode code loads at 0x100000
	canUseHeap  = 1 << 7 // CAN_USE_HEAP: heap_end_ptr is valid
	xlfKernel64 = 1 << 0 // XLF_KERNEL_64: 64-bit entry at load address + 0x200
	xlfAbove4G  = 1 << 1 // XLF_CAN_BE_LOADED_ABOVE_4G: kernel, boot_params, cmdline, initrd may be above 4 GiB
)

// Offsets in struct boot_params (zero-page.rst) outside the setup header.
const (
	bpAcpiRsdpAddr    = 0x070 // u64
	bpExtRamdiskImage = 0x0c0 // u32: ramdisk_image bits 63:32
	bpExtRamdiskSize  = 0x0c4 // u32: ramdisk_size bits 63:32
	bpExtCmdLinePtr   = 0x0c8 // u32: cmd_line_ptr bits 63:32
	bpE820Entries     = 0x1e8 // u8
	bpE820Table       = 0x2d0 // struct boot_e820_entry[128], 20 bytes each
	bpSize            = 0x1000
	e820EntrySize     = 20
)

const (
	// typeOfLoaderUndefined is type_of_loader 0xFF: "no ID assigned".
	typeOfLoaderUndefined = 0xFF
	// heapEndPtr is where the real-mode heap would end, as an offset from
	// the setup code minus 0x200 (boot.rst: heap_end_ptr). Setup code does
	// not run on the 64-bit entry; the value loaders traditionally use
	// (0x10000 - 0x200) is given for kernels that look at it anyway.
	heapEndPtr = 0xFE00
	// entry64Offset: boot.rst "64-bit BOOT PROTOCOL": the entry point is
	// the start of the loaded 64-bit kernel plus 0x200.
	entry64Offset = 0x200
)

// bzImage is the validated setup header of a bzImage.
type bzImage struct {
	hdr           []byte // file bytes [0, hdrEnd): the setup header and what precedes it
	hdrEnd        int
	setupSize     int64 // (setup_sects + 1) * 512: where the protected-mode part starts
	protSize      int64 // size of the protected-mode part
	version       uint16
	xloadflags    uint16
	relocatable   bool
	alignment     uint64
	prefAddress   uint64
	initSize      uint64
	cmdlineSize   uint64
	initrdAddrMax uint64
}

// parseBzImage reads and validates the setup header. A file without the
// HdrS signature gives a notHdrSError.
func parseBzImage(r io.ReaderAt, size int64) (*bzImage, error) {
	if size < offHeader+4 {
		return nil, notHdrSError{fmt.Sprintf("file is %d bytes, too short for a setup header", size)}
	}
	buf := make([]byte, min(size, maxHdrEnd))
	if err := readFull(r, 0, buf); err != nil {
		return nil, fmt.Errorf("read bzImage setup header: %w", err)
	}
	if string(buf[offHeader:offHeader+4]) != hdrSMagic {
		return nil, notHdrSError{"no HdrS signature"}
	}
	if len(buf) < maxHdrEnd {
		return nil, badf("bzImage truncated: %d bytes, shorter than a setup header", size)
	}
	le := binary.LittleEndian
	if flag := le.Uint16(buf[offBootFlag:]); flag != bootFlagMagic {
		return nil, badf("bzImage boot_flag is %#04x, not %#04x", flag, bootFlagMagic)
	}
	b := &bzImage{version: le.Uint16(buf[offVersion:])}
	if b.version < minProtocol {
		return nil, badf("bzImage boot protocol %d.%02d is older than 2.12 (no 64-bit entry point)",
			b.version>>8, b.version&0xff)
	}
	// boot.rst: "The end of setup header can be calculated as follows:
	// 0x0202 + byte value at offset 0x0201".
	b.hdrEnd = offHeader + int(buf[offJump+1])
	if b.hdrEnd < minHdrEnd || b.hdrEnd > maxHdrEnd {
		return nil, badf("bzImage setup header ends at %#x, outside [%#x, %#x]", b.hdrEnd, minHdrEnd, maxHdrEnd)
	}
	b.hdr = buf[:b.hdrEnd]

	if buf[offLoadflags]&loadedHigh == 0 {
		return nil, badf("bzImage loadflags lack LOADED_HIGH (a zImage, loaded at 0x10000)")
	}
	b.xloadflags = le.Uint16(buf[offXloadflags:])
	if b.xloadflags&xlfKernel64 == 0 {
		return nil, badf("bzImage xloadflags lack XLF_KERNEL_64 (no 64-bit entry point)")
	}

	sects := int64(buf[offSetupSects])
	if sects == 0 {
		sects = 4 // boot.rst: "If this field is 0, the real value is 4."
	}
	b.setupSize = (sects + 1) * sectorSize
	if b.setupSize >= size {
		return nil, badf("bzImage truncated: %d setup sectors but the file is %d bytes", sects, size)
	}
	b.protSize = size - b.setupSize
	if sys := int64(le.Uint32(buf[offSyssize:])) * 16; sys > b.protSize {
		return nil, badf("bzImage truncated: syssize says %d bytes of protected-mode code, the file has %d",
			sys, b.protSize)
	}
	payloadEnd := uint64(le.Uint32(buf[offPayloadOffset:])) + uint64(le.Uint32(buf[offPayloadLength:]))
	if payloadEnd > uint64(b.protSize) {
		return nil, badf("bzImage truncated: payload ends at %#x of a %#x-byte protected-mode part",
			payloadEnd, b.protSize)
	}

	b.relocatable = buf[offRelocatable] != 0
	b.alignment = uint64(le.Uint32(buf[offKernelAlignment:]))
	if b.relocatable && (b.alignment == 0 || b.alignment&(b.alignment-1) != 0) {
		return nil, badf("bzImage kernel_alignment %#x is not a power of two", b.alignment)
	}
	b.prefAddress = le.Uint64(buf[offPrefAddress:])
	b.initSize = uint64(le.Uint32(buf[offInitSize:]))
	if b.initSize == 0 {
		return nil, badf("bzImage init_size is 0")
	}
	b.cmdlineSize = uint64(le.Uint32(buf[offCmdlineSize:]))
	b.initrdAddrMax = uint64(le.Uint32(buf[offInitrdAddrMax:]))
	if b.initrdAddrMax == 0 {
		b.initrdAddrMax = defaultInitrdAddrMax
	}
	return b, nil
}

// placement decides where the protected-mode part goes and which memory the
// kernel needs before it reads the memory map. It returns the load address
// and the end of the memory the kernel uses.
//
// boot.rst (init_size) gives the runtime start:
//
//	if relocatable_kernel:
//	    if load_address < pref_address: load_address = pref_address
//	    runtime_start = align_up(load_address, kernel_alignment)
//	else:
//	    runtime_start = pref_address
//
// and the kernel needs init_size bytes from runtime_start. Loading at
// pref_address saves the kernel moving itself; 1 MiB is the classic place.
func (b *bzImage) placement(lowEnd uint64) (load, end uint64, err error) {
	prot := uint64(b.protSize)
	load = layout.HighMemStart
	if b.relocatable && b.prefAddress >= layout.HighMemStart && b.prefAddress%b.alignment == 0 &&
		b.prefAddress < lowEnd && max(prot, b.initSize) <= lowEnd-b.prefAddress {
		load = b.prefAddress
	}
	runtime := b.prefAddress
	if b.relocatable {
		var ok bool
		if runtime, ok = alignUp(max(load, b.prefAddress), b.alignment); !ok {
			return 0, 0, badf("bzImage pref_address %#x overflows when aligned", b.prefAddress)
		}
	}
	if runtime < layout.HighMemStart {
		// A non-relocatable kernel with no pref_address runs where loaded.
		runtime = load
	}
	end = load + prot
	if rEnd := runtime + b.initSize; rEnd < runtime {
		return 0, 0, badf("bzImage init_size %#x at %#x overflows", b.initSize, runtime)
	} else if rEnd > end {
		end = rEnd
	}
	if end > lowEnd || end < load {
		return 0, 0, fmt.Errorf("guest RAM below %#x is too small for the kernel: it needs [%#x, %#x) (init_size %#x at %#x)",
			lowEnd, load, end, b.initSize, runtime)
	}
	return load, end, nil
}

// loadBzImage follows boot.rst's "64-bit BOOT PROTOCOL".
func loadBzImage(mem *memory.Guest, p Params, memMap []E820Entry) (Entry, error) {
	b, err := parseBzImage(p.Kernel, p.KernelSize)
	if err != nil {
		return Entry{}, fmt.Errorf("bzImage: %w", err)
	}
	if uint64(len(p.Cmdline)) > b.cmdlineSize {
		return Entry{}, fmt.Errorf("bzImage: command line is %d bytes, the kernel's cmdline_size is %d",
			len(p.Cmdline), b.cmdlineSize)
	}
	lowEnd := lowRAMEnd(mem)
	load, kernelEnd, err := b.placement(lowEnd)
	if err != nil {
		return Entry{}, fmt.Errorf("bzImage: %w", err)
	}
	if err := loadInto(mem, load, p.Kernel, b.setupSize, uint64(b.protSize)); err != nil {
		return Entry{}, fmt.Errorf("bzImage: protected-mode part at %#x: %w", load, err)
	}
	// initrd_addr_max is the highest address the initrd may occupy, so the
	// initrd must end at or below initrd_addr_max + 1.
	ceil := min(b.initrdAddrMax+1, lowEnd)
	initrdAddr, err := loadInitrd(mem, p, memMap, kernelEnd, ceil, b.xloadflags&xlfAbove4G != 0)
	if err != nil {
		return Entry{}, fmt.Errorf("bzImage: %w", err)
	}
	if err := writeCmdline(mem, p.Cmdline); err != nil {
		return Entry{}, fmt.Errorf("bzImage: %w", err)
	}
	bp, err := b.bootParams(p, memMap, load, initrdAddr)
	if err != nil {
		return Entry{}, fmt.Errorf("bzImage: %w", err)
	}
	if err := mem.Write(layout.ZeroPageAddr, bp); err != nil {
		return Entry{}, fmt.Errorf("bzImage: write boot_params at %#x: %w", layout.ZeroPageAddr, err)
	}
	gdtBase, gdtLimit, err := writeGDT(mem, GDTCode64)
	if err != nil {
		return Entry{}, fmt.Errorf("bzImage: %w", err)
	}
	if err := writePageTables(mem); err != nil {
		return Entry{}, fmt.Errorf("bzImage: %w", err)
	}
	return Entry{
		Mode:     ModeLong64,
		RIP:      load + entry64Offset,
		RSI:      layout.ZeroPageAddr,
		RSP:      layout.BootStackTop,
		GDTBase:  gdtBase,
		GDTLimit: gdtLimit,
		CR3:      layout.PML4Addr,
	}, nil
}

// bootParams builds struct boot_params: zeroed, the image's setup header
// copied in (which leaves the sentinel at 0x1ef zero, as the kernel
// expects), then the fields a boot loader writes.
func (b *bzImage) bootParams(p Params, memMap []E820Entry, load, initrdAddr uint64) ([]byte, error) {
	if load > 0xFFFFFFFF {
		return nil, fmt.Errorf("kernel load address %#x above 4 GiB", load)
	}
	le := binary.LittleEndian
	bp := make([]byte, bpSize)
	copy(bp[hdrStart:b.hdrEnd], b.hdr[hdrStart:b.hdrEnd])

	bp[offTypeOfLoader] = typeOfLoaderUndefined
	bp[offExtLoaderVer], bp[offExtLoaderType] = 0, 0
	bp[offLoadflags] |= canUseHeap
	le.PutUint16(bp[offHeapEndPtr:], heapEndPtr)
	// code32_start: "defaults to the load address of the kernel"; a loader
	// that loads elsewhere updates it.
	le.PutUint32(bp[offCode32Start:], uint32(load))
	// The image's own setup_data and hardware_subarch are meaningless here:
	// no setup_data list, a plain PC.
	le.PutUint64(bp[offSetupData:], 0)
	le.PutUint32(bp[offHardwareSubarch:], 0)

	le.PutUint32(bp[offCmdLinePtr:], uint32(layout.CmdlineAddr))
	le.PutUint32(bp[bpExtCmdLinePtr:], uint32(uint64(layout.CmdlineAddr)>>32))

	if initrdAddr != 0 {
		size := uint64(p.InitrdSize)
		le.PutUint32(bp[offRamdiskImage:], uint32(initrdAddr))
		le.PutUint32(bp[offRamdiskSize:], uint32(size))
		le.PutUint32(bp[bpExtRamdiskImage:], uint32(initrdAddr>>32))
		le.PutUint32(bp[bpExtRamdiskSize:], uint32(size>>32))
	}
	// acpi_rsdp_addr lives in boot_params (zero-page.rst 0x070), not in
	// the setup header where protocol 2.14 briefly put it; kernels older
	// than 5.0 ignore the field and scan the BIOS area for the RSDP.
	le.PutUint64(bp[bpAcpiRsdpAddr:], p.RSDPAddr)

	if len(memMap) > maxE820Entries {
		return nil, fmt.Errorf("memory map has %d entries, boot_params holds %d", len(memMap), maxE820Entries)
	}
	bp[bpE820Entries] = uint8(len(memMap))
	for i, e := range memMap {
		off := bpE820Table + i*e820EntrySize
		le.PutUint64(bp[off:], e.Addr)
		le.PutUint64(bp[off+8:], e.Size)
		le.PutUint32(bp[off+16:], e.Type)
	}
	return bp, nil
}
