// Package loader puts a Linux kernel, its command line, initrd and boot
// information into guest memory and says how the boot vCPU must start.
//
// Two kernel formats are understood:
//
//   - a bzImage, booted through the Linux 64-bit boot protocol
//     (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol"): the
//     protected-mode part is loaded at 1 MiB (or its pref_address), a struct
//     boot_params ("zero page") is built from the image's setup header, and
//     the vCPU enters long mode at load address + 0x200 with RSI pointing at
//     boot_params;
//   - an ELF kernel (vmlinux) carrying the Xen PVH entry note
//     (XEN_ELFNOTE_PHYS32_ENTRY), booted the way the PVH ABI describes
//     (xen/include/public/arch-x86/hvm/start_info.h): 32-bit flat protected
//     mode, paging off, EBX pointing at struct hvm_start_info.
//
// Everything read from the kernel file is validated: a malformed or
// truncated image gives an error wrapping ErrBadImage, never a panic.
package loader

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/memory"
)

// ErrBadImage matches (errors.Is) every error about the contents of a
// kernel file: not a kernel, truncated, inconsistent, or not loadable here.
var ErrBadImage = errors.New("bad kernel image")

// badImageError is an error about the kernel file. It matches ErrBadImage
// without repeating "bad kernel image" in every message.
type badImageError struct{ msg string }

func (e *badImageError) Error() string        { return e.msg }
func (e *badImageError) Is(target error) bool { return target == ErrBadImage }

// badf formats a badImageError.
func badf(format string, args ...any) error {
	return &badImageError{msg: fmt.Sprintf(format, args...)}
}

// Format is the kind of kernel image.
type Format int

const (
	// FormatUnknown is returned with an error by Detect.
	FormatUnknown Format = iota
	// FormatBzImage is a bzImage with a 64-bit entry point (protocol 2.12+,
	// XLF_KERNEL_64).
	FormatBzImage
	// FormatPVH is an ELF kernel with a XEN_ELFNOTE_PHYS32_ENTRY note.
	FormatPVH
)

func (f Format) String() string {
	switch f {
	case FormatBzImage:
		return "bzImage"
	case FormatPVH:
		return "PVH ELF"
	default:
		return fmt.Sprintf("Format(%d)", int(f))
	}
}

// Mode is the CPU state the boot vCPU starts in.
type Mode int

const (
	// ModeLong64 is the Linux 64-bit boot protocol: long mode with the
	// identity page tables at layout.PML4Addr, CS = SelectorCode (64-bit),
	// DS/ES/SS = SelectorData, RSI = boot_params.
	ModeLong64 Mode = iota + 1
	// ModePVH32 is the PVH entry: 32-bit flat protected mode, paging off,
	// CS = SelectorCode (32-bit), DS/ES/SS = SelectorData, EBX =
	// hvm_start_info.
	ModePVH32
)

func (m Mode) String() string {
	switch m {
	case ModeLong64:
		return "long64"
	case ModePVH32:
		return "pvh32"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// Params is what Load puts into guest memory.
type Params struct {
	// Kernel is the kernel image, KernelSize bytes long.
	Kernel     io.ReaderAt
	KernelSize int64
	// Initrd is the initial ramdisk, InitrdSize bytes; nil (or size 0) for
	// none.
	Initrd     io.ReaderAt
	InitrdSize int64
	// Cmdline is the kernel command line, without a terminating NUL.
	Cmdline string
	// RSDPAddr is the guest-physical address of the ACPI RSDP, passed in
	// boot_params.acpi_rsdp_addr / hvm_start_info.rsdp_paddr; 0 for none
	// (Linux then scans the BIOS area itself).
	RSDPAddr uint64
	// MemMap is the memory map given to the kernel; nil means
	// MemoryMap(mem). The initrd is only placed in its RAM entries.
	MemMap []E820Entry
}

// Entry is how the boot vCPU must start.
type Entry struct {
	Mode Mode
	// RIP is the entry point; RSI (ModeLong64) holds the boot_params address
	// and RBX (ModePVH32) the hvm_start_info address. RSP is a usable stack
	// top, though neither protocol requires one.
	RIP, RSI, RBX, RSP uint64
	// GDTBase and GDTLimit describe the GDT Load installed at
	// layout.GDTAddr (see SelectorCode, SelectorData).
	GDTBase  uint64
	GDTLimit uint16
	// CR3 is the page-table root (ModeLong64 only; 0 otherwise).
	CR3 uint64
}

// Load validates the kernel in p, writes kernel, command line, initrd and the
// boot structures into mem, and returns the boot vCPU's starting state.
func Load(mem *memory.Guest, p Params) (Entry, error) {
	if mem == nil {
		return Entry{}, errors.New("no guest memory")
	}
	if p.Kernel == nil {
		return Entry{}, errors.New("no kernel image")
	}
	if p.InitrdSize < 0 || (p.InitrdSize > 0 && p.Initrd == nil) {
		return Entry{}, fmt.Errorf("initrd size %d without a usable initrd", p.InitrdSize)
	}
	if err := checkCmdline(p.Cmdline, layout.CmdlineMax-1); err != nil {
		return Entry{}, err
	}
	memMap := p.MemMap
	if memMap == nil {
		memMap = MemoryMap(mem)
	}
	if err := checkMemMap(memMap); err != nil {
		return Entry{}, err
	}
	format, err := Detect(p.Kernel, p.KernelSize)
	if err != nil {
		// Detect's error already says what the file is not; the caller adds
		// the file name.
		return Entry{}, err
	}
	switch format {
	case FormatBzImage:
		return loadBzImage(mem, p, memMap)
	case FormatPVH:
		return loadPVH(mem, p, memMap)
	}
	return Entry{}, fmt.Errorf("unsupported kernel format %v", format)
}

// Detect inspects a kernel image of size bytes and tells its format. An
// image that is neither a usable bzImage nor a PVH ELF is refused with an
// error (wrapping ErrBadImage) saying what it is not; callers prefix the
// file name.
func Detect(r io.ReaderAt, size int64) (Format, error) {
	if r == nil {
		return FormatUnknown, errors.New("no kernel image")
	}
	if size < 0 {
		return FormatUnknown, badf("negative size %d", size)
	}
	var magic [4]byte
	if size >= int64(len(magic)) {
		if err := readFull(r, 0, magic[:]); err != nil {
			return FormatUnknown, fmt.Errorf("read kernel image: %w", err)
		}
	}
	if string(magic[:]) == elfMagic {
		if _, err := parseELF(r, size); err != nil {
			return FormatUnknown, err
		}
		return FormatPVH, nil
	}
	if _, err := parseBzImage(r, size); err != nil {
		var nh notHdrSError
		if errors.As(err, &nh) {
			return FormatUnknown, badf("not a bzImage (%s) and not an ELF", nh.why)
		}
		return FormatUnknown, err
	}
	return FormatBzImage, nil
}

// notHdrSError says the file does not even look like a bzImage, so Detect
// can report "not a bzImage and not an ELF" instead of a header detail.
type notHdrSError struct{ why string }

func (e notHdrSError) Error() string { return "not a bzImage (" + e.why + ")" }

// checkCmdline refuses a command line the kernel would truncate or misread.
func checkCmdline(cmdline string, max int) error {
	if len(cmdline) > max {
		return fmt.Errorf("command line is %d bytes, the limit is %d", len(cmdline), max)
	}
	if strings.IndexByte(cmdline, 0) >= 0 {
		return errors.New("command line contains a NUL byte")
	}
	return nil
}

// writeCmdline puts the NUL-terminated command line at layout.CmdlineAddr.
func writeCmdline(mem *memory.Guest, cmdline string) error {
	buf := make([]byte, len(cmdline)+1)
	copy(buf, cmdline)
	if err := mem.Write(layout.CmdlineAddr, buf); err != nil {
		return fmt.Errorf("write command line at %#x: %w", layout.CmdlineAddr, err)
	}
	return nil
}

// readFull reads exactly len(buf) bytes at off, treating a short read as
// truncation whatever error (or none) the reader gave with it.
func readFull(r io.ReaderAt, off int64, buf []byte) error {
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return badf("truncated: %d of %d bytes at offset %#x", n, len(buf), off)
	}
	return err
}

// loadInto copies n bytes of r at off straight into guest RAM at gpa.
func loadInto(mem *memory.Guest, gpa uint64, r io.ReaderAt, off int64, n uint64) error {
	if n == 0 {
		return nil
	}
	dst, err := mem.Slice(gpa, n)
	if err != nil {
		return err
	}
	return readFull(r, off, dst)
}

// placeInitrd finds the page-aligned address as high as possible where size
// bytes fit entirely inside one RAM entry of memMap and inside guest RAM,
// at or above floor and ending at or below ceil (exclusive).
func placeInitrd(mem *memory.Guest, memMap []E820Entry, size, floor, ceil uint64) (uint64, bool) {
	best, found := uint64(0), false
	for _, e := range memMap {
		if e.Type != E820RAM {
			continue
		}
		lo, hi := max(e.Addr, floor), min(e.Addr+e.Size, ceil)
		if hi <= lo || hi-lo < size {
			continue
		}
		addr := alignDown(hi-size, layout.PageSize)
		if addr < lo || !mem.Contains(addr, size) {
			continue
		}
		if !found || addr > best {
			best, found = addr, true
		}
	}
	return best, found
}

// loadInitrd places and copies the initrd: as high as possible below
// lowCeil, or, when allowHigh and it does not fit there, as high as possible
// anywhere. It returns the address, or 0 with no initrd.
func loadInitrd(mem *memory.Guest, p Params, memMap []E820Entry, floor, lowCeil uint64, allowHigh bool) (uint64, error) {
	if p.Initrd == nil || p.InitrdSize == 0 {
		return 0, nil
	}
	size := uint64(p.InitrdSize)
	addr, ok := placeInitrd(mem, memMap, size, floor, lowCeil)
	if !ok && allowHigh {
		addr, ok = placeInitrd(mem, memMap, size, max(floor, lowCeil), ^uint64(0))
	}
	if !ok {
		return 0, fmt.Errorf("initrd of %d bytes does not fit in guest RAM between %#x and %#x", size, floor, lowCeil)
	}
	dst, err := mem.Slice(addr, size)
	if err != nil {
		return 0, fmt.Errorf("initrd at %#x: %w", addr, err)
	}
	n, err := p.Initrd.ReadAt(dst, 0)
	if n != len(dst) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("read initrd (%d of %d bytes): %w", n, size, err)
	}
	return addr, nil
}

// lowRAMEnd is the end of the RAM region that starts at address 0.
func lowRAMEnd(mem *memory.Guest) uint64 {
	for _, r := range mem.Regions() {
		if r.GPA == 0 {
			return r.End()
		}
	}
	return 0
}

func alignDown(v, a uint64) uint64 { return v &^ (a - 1) }

// alignUp rounds v up to a (a power of two); ok is false on overflow.
func alignUp(v, a uint64) (uint64, bool) {
	r := (v + a - 1) &^ (a - 1)
	return r, r >= v
}

// overlaps reports whether [a, a+an) and [b, b+bn) intersect.
func overlaps(a, an, b, bn uint64) bool {
	return a < b+bn && b < a+an
}
