package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/memory"
)

func newMem(t testing.TB, size uint64) *memory.Guest {
	t.Helper()
	mem, err := memory.New(size, memory.Options{})
	if err != nil {
		t.Fatalf("memory.New(%d): %v", size, err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem
}

func readMem(t *testing.T, mem *memory.Guest, gpa, n uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := mem.Read(gpa, b); err != nil {
		t.Fatalf("read guest %#x+%#x: %v", gpa, n, err)
	}
	return b
}

func u16At(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
func u32At(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func u64At(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }

// ph64 is ELF64 program header i of an image built by buildELF.
func ph64(img []byte, i int) []byte { return img[elf64HdrSize+i*elf64PhdrSize:] }

func withBz(f func(*bzOpts)) []byte {
	o := defaultBz()
	f(&o)
	return buildBzImage(o)
}

func withELF(f func(*elfOpts)) []byte {
	o := defaultELF()
	f(&o)
	return buildELF(o)
}

func TestDetect(t *testing.T) {
	le := binary.LittleEndian
	tests := []struct {
		name    string
		img     []byte
		want    Format
		wantErr string // substring; "" means success
	}{
		{name: "bzImage", img: buildBzImage(defaultBz()), want: FormatBzImage},
		{name: "bzImage setup_sects 0 means 4", img: withBz(func(o *bzOpts) { o.zeroSects = true }), want: FormatBzImage},
		{name: "bzImage protocol 2.12", img: withBz(func(o *bzOpts) { o.version = 0x020c }), want: FormatBzImage},
		{name: "empty file", img: nil, wantErr: "not a bzImage (file is 0 bytes, too short for a setup header) and not an ELF"},
		{name: "random bytes", img: bytes.Repeat([]byte{0x90}, 4096), wantErr: "not a bzImage (no HdrS signature) and not an ELF"},
		{name: "truncated before HdrS", img: buildBzImage(defaultBz())[:0x203], wantErr: "(file is 515 bytes, too short for a setup header)"},
		{name: "truncated setup header", img: buildBzImage(defaultBz())[:0x240], wantErr: "shorter than a setup header"},
		{name: "truncated after setup", img: buildBzImage(defaultBz())[:4*512], wantErr: "truncated"},
		{name: "truncated protected-mode part", img: buildBzImage(defaultBz())[:4*512+100], wantErr: "syssize"},
		{name: "bad boot flag", img: func() []byte {
			b := buildBzImage(defaultBz())
			le.PutUint16(b[offBootFlag:], 0x1234)
			return b
		}(), wantErr: "boot_flag"},
		{name: "old protocol", img: withBz(func(o *bzOpts) { o.version = 0x020a }), wantErr: "2.10 is older than 2.12"},
		{name: "no 64-bit entry", img: withBz(func(o *bzOpts) { o.xloadflags = 0 }), wantErr: "XLF_KERNEL_64"},
		{name: "zImage", img: withBz(func(o *bzOpts) { o.loadflags = 0 }), wantErr: "LOADED_HIGH"},
		{name: "header too short", img: withBz(func(o *bzOpts) { o.jumpByte = 0x40 }), wantErr: "setup header ends"},
		{name: "header too long", img: withBz(func(o *bzOpts) { o.jumpByte = 0xa0 }), wantErr: "setup header ends"},
		{name: "alignment not a power of two", img: withBz(func(o *bzOpts) { o.align = 0x300000 }), wantErr: "kernel_alignment"},
		{name: "init_size 0", img: withBz(func(o *bzOpts) { o.initSize = 0 }), wantErr: "init_size is 0"},
		{name: "ELF64 PVH", img: buildELF(defaultELF()), want: FormatPVH},
		{name: "ELF32 PVH", img: withELF(func(o *elfOpts) {
			o.class64, o.machine = false, emI386
			o.notes = []note{pvhNote(0x1000100, 4)}
		}), want: FormatPVH},
		{name: "ELF without PVH note", img: withELF(func(o *elfOpts) { o.notes = o.notes[:2] }), wantErr: "no Xen PVH entry note"},
		{name: "ELF without notes", img: withELF(func(o *elfOpts) { o.notes = nil }), wantErr: "no Xen PVH entry note"},
		{name: "ELF for aarch64", img: withELF(func(o *elfOpts) { o.machine = 183 }), wantErr: "machine 183, not x86"},
		{name: "ELF big-endian", img: withELF(func(o *elfOpts) { o.bigEndian = true }), wantErr: "not little-endian"},
		{name: "ELF truncated header", img: buildELF(defaultELF())[:40], wantErr: "shorter than an ELF header"},
		{name: "ELF64 truncated header", img: buildELF(defaultELF())[:60], wantErr: "shorter than an ELF64 header"},
		{name: "ELF truncated program headers", img: buildELF(defaultELF())[:100], wantErr: "program headers"},
		{name: "ELF truncated segment", img: func() []byte { b := buildELF(defaultELF()); return b[:len(b)-10] }(), wantErr: "outside the"},
		{name: "ELF too many program headers", img: withELF(func(o *elfOpts) { o.phnum = 1000 }), wantErr: "program headers, accepted"},
		{name: "ELF PN_XNUM", img: withELF(func(o *elfOpts) { o.phnum = 0xffff }), wantErr: "program headers, accepted"},
		{name: "ELF entry above 4 GiB", img: withELF(func(o *elfOpts) { o.notes = []note{pvhNote(1<<32, 8)} }), wantErr: "above 4 GiB"},
		{name: "ELF entry outside segments", img: withELF(func(o *elfOpts) { o.notes = []note{pvhNote(0x2000000, 8)} }), wantErr: "outside every loadable segment"},
		{name: "ELF note bad size", img: withELF(func(o *elfOpts) {
			o.notes = []note{{name: "Xen", typ: xenElfnotePhys32Entry, desc: []byte{1, 2}}}
		}), wantErr: "2-byte value"},
		{name: "ELF too many notes", img: withELF(func(o *elfOpts) {
			o.notes = append(make([]note, 0, maxNotes+1), make([]note, maxNotes)...)
			o.notes = append(o.notes, pvhNote(0x1000100, 8))
		}), wantErr: "more than 512 notes"},
		{name: "ELF filesz > memsz", img: func() []byte {
			b := buildELF(defaultELF())
			le.PutUint64(ph64(b, 0)[40:], 0x10)
			return b
		}(), wantErr: "p_filesz"},
		{name: "ELF segment offset overflows", img: func() []byte {
			b := buildELF(defaultELF())
			le.PutUint64(ph64(b, 0)[8:], ^uint64(0)-4)
			return b
		}(), wantErr: "outside the"},
		{name: "ELF note name overruns", img: func() []byte {
			b := buildELF(defaultELF())
			noteOff := u64At(ph64(b, 2), 8)
			le.PutUint32(b[noteOff:], 0xfffffff0)
			return b
		}(), wantErr: "name overruns"},
		{name: "ELF relocatable object", img: func() []byte {
			b := buildELF(defaultELF())
			le.PutUint16(b[16:], 1)
			return b
		}(), wantErr: "not an executable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Detect(bytes.NewReader(tc.img), int64(len(tc.img)))
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Fatalf("Detect = %v, %v; want %v", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Detect = %v, want error containing %q", got, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Detect error %q, want it to contain %q", err, tc.wantErr)
			}
			if !errors.Is(err, ErrBadImage) {
				t.Errorf("Detect error %q does not wrap ErrBadImage", err)
			}
		})
	}
}

func TestFormatAndModeStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{FormatBzImage.String(), "bzImage"},
		{FormatPVH.String(), "PVH ELF"},
		{Format(9).String(), "Format(9)"},
		{ModeLong64.String(), "long64"},
		{ModePVH32.String(), "pvh32"},
	} {
		if tc.got != tc.want {
			t.Errorf("String() = %q, want %q", tc.got, tc.want)
		}
	}
}

func TestMemoryMap(t *testing.T) {
	ecam := E820Entry{layout.ECAMStart, layout.ECAMSize, E820Reserved}
	base := []E820Entry{
		{0, layout.EBDAStart, E820RAM},
		{layout.EBDAStart, layout.HighMemStart - layout.EBDAStart, E820Reserved},
	}
	tests := []struct {
		name string
		size uint64
		want []E820Entry
	}{
		{"64 MiB", 64 * layout.MiB, append(base[:2:2],
			E820Entry{layout.HighMemStart, 63 * layout.MiB, E820RAM}, ecam)},
		{"1 MiB", layout.MiB, append(base[:2:2], ecam)},
		{"3 GiB exactly", 3 * layout.GiB, append(base[:2:2],
			E820Entry{layout.HighMemStart, layout.MMIOHoleStart - layout.HighMemStart, E820RAM}, ecam)},
		{"3.5 GiB", 3*layout.GiB + 512*layout.MiB, append(base[:2:2],
			E820Entry{layout.HighMemStart, layout.MMIOHoleStart - layout.HighMemStart, E820RAM}, ecam,
			E820Entry{layout.HighRAMStart, 512 * layout.MiB, E820RAM})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := MemoryMap(newMem(t, tc.size))
			if len(got) != len(tc.want) {
				t.Fatalf("MemoryMap = %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("entry %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
			var ram uint64
			for _, e := range got {
				if e.Type == E820RAM {
					ram += e.Size
				}
			}
			if reserved := uint64(layout.HighMemStart - layout.EBDAStart); ram+reserved != tc.size {
				t.Errorf("usable RAM %#x + reserved low %#x != guest size %#x", ram, reserved, tc.size)
			}
		})
	}
}

// checkBootParams verifies the zero page after a bzImage Load.
func checkBootParams(t *testing.T, mem *memory.Guest, img []byte, p Params, load, initrdAddr uint64) {
	t.Helper()
	bp := readMem(t, mem, layout.ZeroPageAddr, bpSize)
	hdrEnd := offHeader + int(img[offJump+1])
	// Fields the loader writes; everything else in the header is the image's.
	written := map[int]int{offTypeOfLoader: 1, offLoadflags: 1, offCode32Start: 4, offRamdiskImage: 4,
		offRamdiskSize: 4, offHeapEndPtr: 2, offExtLoaderVer: 1, offExtLoaderType: 1, offCmdLinePtr: 4,
		offHardwareSubarch: 4, offSetupData: 8}
	for off := hdrStart; off < hdrEnd; {
		if n, ok := written[off]; ok {
			off += n
			continue
		}
		if bp[off] != img[off] {
			t.Errorf("boot_params[%#x] = %#x, image has %#x", off, bp[off], img[off])
		}
		off++
	}
	if bp[0x1ef] != 0 {
		t.Errorf("sentinel = %#x, want 0", bp[0x1ef])
	}
	if bp[offTypeOfLoader] != 0xff {
		t.Errorf("type_of_loader = %#x, want 0xff", bp[offTypeOfLoader])
	}
	if want := img[offLoadflags] | canUseHeap; bp[offLoadflags] != want {
		t.Errorf("loadflags = %#x, want %#x", bp[offLoadflags], want)
	}
	if got := u16At(bp, offHeapEndPtr); got != heapEndPtr {
		t.Errorf("heap_end_ptr = %#x", got)
	}
	if got := u32At(bp, offCode32Start); uint64(got) != load {
		t.Errorf("code32_start = %#x, want %#x", got, load)
	}
	if got := u32At(bp, offCmdLinePtr); got != layout.CmdlineAddr || u32At(bp, bpExtCmdLinePtr) != 0 {
		t.Errorf("cmd_line_ptr = %#x (ext %#x)", got, u32At(bp, bpExtCmdLinePtr))
	}
	gotInitrd := uint64(u32At(bp, offRamdiskImage)) | uint64(u32At(bp, bpExtRamdiskImage))<<32
	gotSize := uint64(u32At(bp, offRamdiskSize)) | uint64(u32At(bp, bpExtRamdiskSize))<<32
	if gotInitrd != initrdAddr || gotSize != uint64(p.InitrdSize) {
		t.Errorf("ramdisk = %#x+%#x, want %#x+%#x", gotInitrd, gotSize, initrdAddr, p.InitrdSize)
	}
	if got := u64At(bp, bpAcpiRsdpAddr); got != p.RSDPAddr {
		t.Errorf("acpi_rsdp_addr = %#x, want %#x", got, p.RSDPAddr)
	}
	want := p.MemMap
	if want == nil {
		want = MemoryMap(mem)
	}
	if int(bp[bpE820Entries]) != len(want) {
		t.Fatalf("e820_entries = %d, want %d", bp[bpE820Entries], len(want))
	}
	for i, e := range want {
		off := bpE820Table + i*e820EntrySize
		got := E820Entry{u64At(bp, off), u64At(bp, off+8), u32At(bp, off+16)}
		if got != e {
			t.Errorf("e820[%d] = %+v, want %+v", i, got, e)
		}
	}
}

func checkCmdlineMem(t *testing.T, mem *memory.Guest, cmdline string) {
	t.Helper()
	got := readMem(t, mem, layout.CmdlineAddr, uint64(len(cmdline)+1))
	if string(got) != cmdline+"\x00" {
		t.Errorf("command line in guest = %q, want %q", got, cmdline+"\x00")
	}
}

func checkInitrdMem(t *testing.T, mem *memory.Guest, addr uint64, size int64) {
	t.Helper()
	if addr%layout.PageSize != 0 {
		t.Errorf("initrd at %#x is not page aligned", addr)
	}
	got := readMem(t, mem, addr, uint64(size))
	for i := range got {
		if got[i] != patternByte(int64(i)) {
			t.Fatalf("initrd byte %d at %#x = %#x, want %#x", i, addr+uint64(i), got[i], patternByte(int64(i)))
		}
	}
}

func TestLoadBzImage(t *testing.T) {
	mem := newMem(t, 64*layout.MiB)
	o := defaultBz()
	img := buildBzImage(o)
	const initrdSize = 100*1024 + 17
	p := Params{
		Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
		Initrd: patternReader{initrdSize}, InitrdSize: initrdSize,
		Cmdline:  "console=ttyS0 reboot=k panic=1",
		RSDPAddr: layout.ACPIStart,
	}
	e, err := Load(mem, p)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	const load = 0x1000000 // pref_address: relocatable, aligned, fits
	want := Entry{Mode: ModeLong64, RIP: load + 0x200, RSI: layout.ZeroPageAddr, RSP: layout.BootStackTop,
		GDTBase: layout.GDTAddr, GDTLimit: 31, CR3: layout.PML4Addr}
	if e != want {
		t.Fatalf("entry = %+v, want %+v", e, want)
	}
	setup := (int(o.setupSects) + 1) * 512
	if got := readMem(t, mem, load, uint64(o.protSize)); !bytes.Equal(got, img[setup:]) {
		t.Error("protected-mode part not at the load address")
	}
	checkCmdlineMem(t, mem, p.Cmdline)
	// As high as possible: page-aligned, ending at or below the end of RAM.
	wantInitrd := uint64(64*layout.MiB-initrdSize) &^ (layout.PageSize - 1)
	checkBootParams(t, mem, img, p, load, wantInitrd)
	checkInitrdMem(t, mem, wantInitrd, initrdSize)

	gdt := readMem(t, mem, layout.GDTAddr, 32)
	if u64At(gdt, 0) != 0 || u64At(gdt, SelectorCode) != GDTCode64 || u64At(gdt, SelectorData) != GDTData {
		t.Errorf("GDT = %x", gdt)
	}
	if got := readMem(t, mem, layout.PML4Addr, 8); u64At(got, 0) != layout.PDPTAddr|3 {
		t.Errorf("PML4[0] = %#x", u64At(got, 0))
	}
	pdpt := readMem(t, mem, layout.PDPTAddr, 32)
	for i := range 4 {
		if got, want := u64At(pdpt, i*8), uint64(layout.PDAddr+i*layout.PageSize)|3; got != want {
			t.Errorf("PDPT[%d] = %#x, want %#x", i, got, want)
		}
	}
	for _, gpa := range []uint64{0, 2 * layout.MiB, load, 3*layout.GiB + 2*layout.MiB, 4*layout.GiB - 2*layout.MiB} {
		pd := readMem(t, mem, layout.PDAddr+gpa/layout.GiB*layout.PageSize+(gpa%layout.GiB)/(2*layout.MiB)*8, 8)
		if got := u64At(pd, 0); got != gpa|0x83 {
			t.Errorf("PD entry for %#x = %#x, want %#x", gpa, got, gpa|0x83)
		}
	}
}

func TestLoadBzImagePlacement(t *testing.T) {
	tests := []struct {
		name     string
		memSize  uint64
		opts     func(*bzOpts)
		wantLoad uint64
		wantErr  string
	}{
		{name: "relocatable at pref_address", memSize: 64 * layout.MiB, opts: func(o *bzOpts) {}, wantLoad: 0x1000000},
		{name: "not relocatable", memSize: 64 * layout.MiB, opts: func(o *bzOpts) { o.relocatable = false }, wantLoad: layout.HighMemStart},
		{name: "pref_address unaligned", memSize: 64 * layout.MiB, opts: func(o *bzOpts) { o.pref = 0x1100000 }, wantLoad: layout.HighMemStart},
		{name: "no pref_address", memSize: 64 * layout.MiB, opts: func(o *bzOpts) { o.pref = 0 }, wantLoad: layout.HighMemStart},
		{name: "setup_sects 0", memSize: 64 * layout.MiB, opts: func(o *bzOpts) { o.zeroSects = true }, wantLoad: 0x1000000},
		{name: "init_size beyond RAM", memSize: 64 * layout.MiB, opts: func(o *bzOpts) { o.initSize = 60 * layout.MiB },
			wantErr: "too small for the kernel"},
		{name: "kernel beyond RAM", memSize: 2 * layout.MiB, opts: func(o *bzOpts) { o.pref = 0; o.protSize = 2 * layout.MiB },
			wantErr: "too small for the kernel"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem := newMem(t, tc.memSize)
			o := defaultBz()
			tc.opts(&o)
			img := buildBzImage(o)
			e, err := Load(mem, Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img))})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Load error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if e.RIP != tc.wantLoad+0x200 {
				t.Errorf("RIP = %#x, want %#x", e.RIP, tc.wantLoad+0x200)
			}
			setup := len(img) - o.protSize
			if got := readMem(t, mem, tc.wantLoad, uint64(o.protSize)); !bytes.Equal(got, img[setup:]) {
				t.Error("protected-mode part not at the load address")
			}
			bp := readMem(t, mem, layout.ZeroPageAddr, bpSize)
			if u32At(bp, offRamdiskImage) != 0 || u32At(bp, offRamdiskSize) != 0 {
				t.Error("ramdisk fields set without an initrd")
			}
		})
	}
}

func TestInitrdPlacement(t *testing.T) {
	const big = 3*layout.GiB + 512*layout.MiB
	tests := []struct {
		name       string
		memSize    uint64
		opts       func(*bzOpts)
		initrdSize int64
		memMap     []E820Entry
		wantAddr   uint64 // 0: compute as top-of-window below wantCeil
		wantCeil   uint64
		wantErr    string
	}{
		{name: "top of low RAM", memSize: 64 * layout.MiB, initrdSize: 5000, wantCeil: 64 * layout.MiB},
		{name: "initrd_addr_max below RAM end", memSize: 64 * layout.MiB,
			opts: func(o *bzOpts) { o.initrdAddrMax = 0x1ffffff }, initrdSize: 3 * layout.MiB, wantCeil: 32 * layout.MiB},
		{name: "initrd_addr_max 0 means 0x37FFFFFF", memSize: big,
			opts: func(o *bzOpts) { o.initrdAddrMax = 0 }, initrdSize: 1 * layout.MiB, wantCeil: 0x38000000},
		{name: "2 GiB limit with 3.5 GiB RAM", memSize: big, initrdSize: 7*layout.MiB + 3, wantCeil: 0x80000000},
		{name: "limit above low RAM", memSize: big, opts: func(o *bzOpts) { o.initrdAddrMax = 0xffffffff },
			initrdSize: 4096, wantCeil: layout.MMIOHoleStart},
		{name: "above 4 GiB when low RAM is too small", memSize: big,
			opts: func(o *bzOpts) { o.initrdAddrMax = 0x1ffffff }, initrdSize: 40 * layout.MiB,
			wantAddr: (layout.HighRAMStart + 512*layout.MiB - 40*layout.MiB)},
		{name: "no room without XLF_CAN_BE_LOADED_ABOVE_4G", memSize: big,
			opts: func(o *bzOpts) { o.initrdAddrMax = 0x1ffffff; o.xloadflags = xlfKernel64 }, initrdSize: 40 * layout.MiB,
			wantErr: "does not fit"},
		{name: "larger than RAM", memSize: 64 * layout.MiB, initrdSize: 64 * layout.MiB, wantErr: "does not fit"},
		{name: "only in RAM entries of the map", memSize: 64 * layout.MiB, initrdSize: 4096,
			memMap: []E820Entry{{0, layout.EBDAStart, E820RAM}, {layout.HighMemStart, 31 * layout.MiB, E820RAM},
				{32 * layout.MiB, 32 * layout.MiB, E820Reserved}},
			wantCeil: 32 * layout.MiB},
		{name: "initrd reader shorter than its size", memSize: 64 * layout.MiB, initrdSize: -1, wantErr: "read initrd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem := newMem(t, tc.memSize)
			o := defaultBz()
			if tc.opts != nil {
				tc.opts(&o)
			}
			img := buildBzImage(o)
			p := Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
				Initrd: patternReader{tc.initrdSize}, InitrdSize: tc.initrdSize, MemMap: tc.memMap}
			if tc.initrdSize < 0 {
				p.Initrd, p.InitrdSize = patternReader{100}, 200
			}
			_, err := Load(mem, p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Load error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			bp := readMem(t, mem, layout.ZeroPageAddr, bpSize)
			addr := uint64(u32At(bp, offRamdiskImage)) | uint64(u32At(bp, bpExtRamdiskImage))<<32
			want := tc.wantAddr
			if want == 0 {
				want = (tc.wantCeil - uint64(tc.initrdSize)) &^ (layout.PageSize - 1)
			}
			if addr != want {
				t.Errorf("initrd at %#x, want %#x", addr, want)
			}
			if addr < 0x1000000+uint64(o.initSize) {
				t.Errorf("initrd at %#x overlaps the kernel", addr)
			}
			checkBootParams(t, mem, img, p, 0x1000000, want)
			checkInitrdMem(t, mem, addr, tc.initrdSize)
		})
	}
}

func TestLoadCmdline(t *testing.T) {
	tests := []struct {
		name        string
		cmdlineSize uint32
		cmdline     string
		pvh         bool
		wantErr     string
	}{
		{name: "longest accepted", cmdlineSize: 4095, cmdline: strings.Repeat("a", layout.CmdlineMax-1)},
		{name: "longer than CmdlineMax", cmdlineSize: 8191, cmdline: strings.Repeat("a", layout.CmdlineMax), wantErr: "limit is 4095"},
		{name: "longer than cmdline_size", cmdlineSize: 255, cmdline: strings.Repeat("b", 256), wantErr: "cmdline_size is 255"},
		{name: "exactly cmdline_size", cmdlineSize: 255, cmdline: strings.Repeat("b", 255)},
		{name: "NUL inside", cmdlineSize: 255, cmdline: "a\x00b", wantErr: "NUL"},
		{name: "PVH longest", pvh: true, cmdline: strings.Repeat("c", layout.CmdlineMax-1)},
		{name: "PVH too long", pvh: true, cmdline: strings.Repeat("c", layout.CmdlineMax), wantErr: "limit is 4095"},
		{name: "empty", cmdlineSize: 255},
	}
	mem := newMem(t, 64*layout.MiB)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := withBz(func(o *bzOpts) { o.cmdlineSize = tc.cmdlineSize })
			if tc.pvh {
				img = buildELF(defaultELF())
			}
			_, err := Load(mem, Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), Cmdline: tc.cmdline})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Load error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			checkCmdlineMem(t, mem, tc.cmdline)
		})
	}
}

func TestLoadPVH(t *testing.T) {
	for _, initrd := range []int64{0, 300*1024 + 5} {
		t.Run(map[bool]string{true: "with initrd", false: "without initrd"}[initrd > 0], func(t *testing.T) {
			mem := newMem(t, 64*layout.MiB)
			// Dirty the bss first: Load must zero it.
			dirty := bytes.Repeat([]byte{0xaa}, 0x4000)
			if err := mem.Write(0x1004000, dirty); err != nil {
				t.Fatal(err)
			}
			o := defaultELF()
			img := buildELF(o)
			p := Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
				Cmdline: "console=hvc0", RSDPAddr: layout.ACPIStart}
			if initrd > 0 {
				p.Initrd, p.InitrdSize = patternReader{initrd}, initrd
			}
			e, err := Load(mem, p)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Entry{Mode: ModePVH32, RIP: 0x1000100, RBX: layout.PVHStartInfoAddr, RSP: layout.BootStackTop,
				GDTBase: layout.GDTAddr, GDTLimit: 31}
			if e != want {
				t.Fatalf("entry = %+v, want %+v", e, want)
			}
			for _, s := range o.segs {
				if got := readMem(t, mem, s.paddr, uint64(len(s.data))); !bytes.Equal(got, s.data) {
					t.Errorf("segment at %#x not loaded", s.paddr)
				}
				if s.memsz > uint64(len(s.data)) {
					bss := readMem(t, mem, s.paddr+uint64(len(s.data)), s.memsz-uint64(len(s.data)))
					if !bytes.Equal(bss, make([]byte, len(bss))) {
						t.Errorf("bss of segment at %#x not zeroed", s.paddr)
					}
				}
			}
			checkCmdlineMem(t, mem, p.Cmdline)

			si := readMem(t, mem, layout.PVHStartInfoAddr, hvmStartInfoSize)
			mm := MemoryMap(mem)
			if u32At(si, hsiMagic) != 0x336ec578 || u32At(si, hsiVersion) != 1 || u32At(si, hsiFlags) != 0 {
				t.Errorf("start info header = %x", si[:16])
			}
			if u64At(si, hsiCmdlinePaddr) != layout.CmdlineAddr || u64At(si, hsiRsdpPaddr) != layout.ACPIStart {
				t.Errorf("cmdline_paddr %#x rsdp_paddr %#x", u64At(si, hsiCmdlinePaddr), u64At(si, hsiRsdpPaddr))
			}
			if u64At(si, hsiMemmapPaddr) != layout.PVHMemmapAddr || int(u32At(si, hsiMemmapEntries)) != len(mm) {
				t.Errorf("memmap %#x x %d, want %#x x %d", u64At(si, hsiMemmapPaddr), u32At(si, hsiMemmapEntries),
					layout.PVHMemmapAddr, len(mm))
			}
			tbl := readMem(t, mem, layout.PVHMemmapAddr, uint64(len(mm)*hvmMemmapEntrySize))
			for i, want := range mm {
				b := tbl[i*hvmMemmapEntrySize:]
				got := E820Entry{u64At(b, 0), u64At(b, 8), u32At(b, 16)}
				if got != want || u32At(b, 20) != 0 {
					t.Errorf("memmap[%d] = %+v (reserved %#x), want %+v", i, got, u32At(b, 20), want)
				}
			}
			nMods := u32At(si, hsiNrModules)
			if initrd == 0 {
				if nMods != 0 || u64At(si, hsiModlistPaddr) != 0 {
					t.Errorf("nr_modules %d modlist %#x without initrd", nMods, u64At(si, hsiModlistPaddr))
				}
			} else {
				modlist := u64At(si, hsiModlistPaddr)
				if nMods != 1 || modlist != layout.PVHMemmapAddr+uint64(len(mm)*hvmMemmapEntrySize) {
					t.Fatalf("nr_modules %d modlist %#x", nMods, modlist)
				}
				m := readMem(t, mem, modlist, hvmModlistEntrySize)
				addr := u64At(m, 0)
				if u64At(m, 8) != uint64(initrd) || u64At(m, 16) != 0 || u64At(m, 24) != 0 {
					t.Errorf("module entry = %x", m)
				}
				if want := uint64(64*layout.MiB-initrd) &^ (layout.PageSize - 1); addr != want {
					t.Errorf("initrd at %#x, want %#x", addr, want)
				}
				checkInitrdMem(t, mem, addr, initrd)
			}
			gdt := readMem(t, mem, layout.GDTAddr, 32)
			if u64At(gdt, SelectorCode) != GDTCode32 || u64At(gdt, SelectorData) != GDTData {
				t.Errorf("GDT = %x", gdt)
			}
		})
	}
}

func TestLoadPVHRefused(t *testing.T) {
	le := binary.LittleEndian
	tests := []struct {
		name    string
		img     []byte
		wantErr string
	}{
		{name: "segment over boot structures", img: withELF(func(o *elfOpts) {
			o.segs = append(o.segs, testSeg{paddr: 0x20000, data: []byte{1}})
		}), wantErr: "below 0x100000"},
		{name: "segment beyond RAM", img: withELF(func(o *elfOpts) {
			o.segs = append(o.segs, testSeg{paddr: 0x8000000, data: []byte{1}})
		}), wantErr: "not in guest RAM"},
		{name: "segment in the MMIO hole", img: withELF(func(o *elfOpts) {
			o.segs = append(o.segs, testSeg{paddr: layout.MMIOHoleStart, data: []byte{1}})
		}), wantErr: "not in guest RAM"},
		{name: "bss beyond RAM", img: withELF(func(o *elfOpts) { o.segs[1].memsz = 1 << 40 }), wantErr: "not in guest RAM"},
		{name: "overlapping segments", img: withELF(func(o *elfOpts) { o.segs[1].paddr = 0x1002000 }), wantErr: "overlap"},
		{name: "segment wraps", img: func() []byte {
			b := buildELF(defaultELF())
			le.PutUint64(ph64(b, 1)[24:], ^uint64(0)-0x100)
			return b
		}(), wantErr: "wraps"},
	}
	mem := newMem(t, 64*layout.MiB)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(mem, Params{Kernel: bytes.NewReader(tc.img), KernelSize: int64(len(tc.img))})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Load error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadRefusesBadParams(t *testing.T) {
	img := buildBzImage(defaultBz())
	mem := newMem(t, 64*layout.MiB)
	tooMany := make([]E820Entry, maxE820Entries+1)
	for i := range tooMany {
		tooMany[i] = E820Entry{uint64(i) * layout.MiB, layout.MiB, E820RAM}
	}
	tests := []struct {
		name    string
		mem     *memory.Guest
		p       Params
		wantErr string
	}{
		{name: "no memory", p: Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img))}, wantErr: "no guest memory"},
		{name: "no kernel", mem: mem, wantErr: "no kernel image"},
		{name: "initrd size without reader", mem: mem,
			p: Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), InitrdSize: 10}, wantErr: "initrd size"},
		{name: "negative initrd size", mem: mem,
			p:       Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), Initrd: patternReader{1}, InitrdSize: -1},
			wantErr: "initrd size"},
		{name: "too many e820 entries", mem: mem,
			p: Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), MemMap: tooMany}, wantErr: "at most 128"},
		{name: "wrapping e820 entry", mem: mem,
			p:       Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), MemMap: []E820Entry{{^uint64(0), 2, E820RAM}}},
			wantErr: "wraps"},
		{name: "empty memory map", mem: mem,
			p: Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), MemMap: []E820Entry{}}, wantErr: "empty"},
		{name: "kernel shorter than its size", mem: mem,
			p: Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)) + 4096}, wantErr: "truncated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.mem, tc.p)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Load error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestPVHFullMemmap: the largest memory map accepted (128 entries, what
// boot_params holds) still fits with the module list below the zero page.
func TestPVHFullMemmap(t *testing.T) {
	mem := newMem(t, 64*layout.MiB)
	m := []E820Entry{{layout.HighMemStart, 63 * layout.MiB, E820RAM}}
	for i := 1; i < maxE820Entries; i++ {
		m = append(m, E820Entry{layout.HighRAMStart + uint64(i)*4096, 4096, E820Reserved})
	}
	img := buildELF(defaultELF())
	_, err := Load(mem, Params{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), MemMap: m,
		Initrd: patternReader{10}, InitrdSize: 10})
	if err != nil {
		t.Fatalf("Load with %d entries and a module: %v", len(m), err)
	}
	si := readMem(t, mem, layout.PVHStartInfoAddr, hvmStartInfoSize)
	if got := u32At(si, hsiMemmapEntries); got != maxE820Entries {
		t.Errorf("memmap_entries = %d, want %d", got, maxE820Entries)
	}
	if end := u64At(si, hsiModlistPaddr) + hvmModlistEntrySize; end > layout.ZeroPageAddr {
		t.Errorf("module list ends at %#x, past the zero page %#x", end, layout.ZeroPageAddr)
	}
}

// realKernel returns the path of a real guest kernel, or skips.
func realKernel(t *testing.T, name string, envOK bool) string {
	t.Helper()
	if p := os.Getenv("KVMM_KERNEL"); p != "" && envOK {
		return p
	}
	p := filepath.Join("..", "..", "build", "guest", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no %s (run `make guest` or set KVMM_KERNEL)", p)
	}
	return p
}

func TestRealKernel(t *testing.T) {
	for _, tc := range []struct {
		file  string
		envOK bool
	}{{"vmlinuz", true}, {"vmlinux", false}} {
		t.Run(tc.file, func(t *testing.T) {
			path := realKernel(t, tc.file, tc.envOK)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			format, err := Detect(f, st.Size())
			if err != nil {
				t.Fatalf("Detect(%s): %v", path, err)
			}
			t.Logf("%s: %v, %d bytes", path, format, st.Size())
			mem := newMem(t, 512*layout.MiB)
			p := Params{Kernel: f, KernelSize: st.Size(), Cmdline: "console=ttyS0", Initrd: patternReader{1 << 20}, InitrdSize: 1 << 20}
			e, err := Load(mem, p)
			if err != nil {
				t.Fatalf("Load(%s): %v", path, err)
			}
			t.Logf("entry %+v", e)
			switch format {
			case FormatBzImage:
				b, err := parseBzImage(f, st.Size())
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("protocol %d.%02d, setup %d bytes, pref_address %#x, init_size %#x, kernel_alignment %#x, cmdline_size %d, initrd_addr_max %#x, xloadflags %#x",
					b.version>>8, b.version&0xff, b.setupSize, b.prefAddress, b.initSize, b.alignment, b.cmdlineSize, b.initrdAddrMax, b.xloadflags)
				if e.Mode != ModeLong64 || e.RIP != b.prefAddress+0x200 {
					t.Errorf("entry %+v, want long mode at pref_address %#x + 0x200", e, b.prefAddress)
				}
				img := make([]byte, 4096)
				if err := readFull(f, b.setupSize, img); err != nil {
					t.Fatal(err)
				}
				if got := readMem(t, mem, b.prefAddress, 4096); !bytes.Equal(got, img) {
					t.Error("kernel not at pref_address")
				}
				checkBootParams(t, mem, b.hdr, Params{InitrdSize: p.InitrdSize}, b.prefAddress,
					uint64(u32At(readMem(t, mem, layout.ZeroPageAddr, bpSize), offRamdiskImage)))
			case FormatPVH:
				k, err := parseELF(f, st.Size())
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("PVH entry %#x, %d loadable segments", k.entry, len(k.loads))
				if e.Mode != ModePVH32 || e.RIP != k.entry {
					t.Errorf("entry %+v, want PVH at %#x", e, k.entry)
				}
			}
		})
	}
}
