package loader

import (
	"encoding/binary"
	"io"
)

// Synthetic kernel images for the tests: just enough structure for the
// loader, with recognisable contents so placement can be checked byte by
// byte.

// bzOpts describes a fake bzImage. The zero value of a field means the
// default given in defaultBz.
type bzOpts struct {
	setupSects    uint8
	zeroSects     bool // write setup_sects = 0 (meaning 4)
	version       uint16
	loadflags     uint8
	xloadflags    uint16
	relocatable   bool
	align         uint32
	pref          uint64
	initSize      uint32
	cmdlineSize   uint32
	initrdAddrMax uint32
	protSize      int
	jumpByte      uint8 // header end = 0x202 + jumpByte
	syssize       uint32
	noSyssize     bool
}

func defaultBz() bzOpts {
	return bzOpts{
		setupSects:    3,
		version:       0x020f,
		loadflags:     loadedHigh,
		xloadflags:    xlfKernel64 | xlfAbove4G,
		relocatable:   true,
		align:         0x200000,
		pref:          0x1000000,
		initSize:      0x400000,
		cmdlineSize:   2047,
		initrdAddrMax: 0x7fffffff,
		protSize:      64 * 1024,
		jumpByte:      0x6a,
	}
}

// protByte is the content of byte i of the protected-mode part.
func protByte(i int) byte { return byte(i*7 + i>>8 + 1) }

func buildBzImage(o bzOpts) []byte {
	sects := int(o.setupSects)
	if o.zeroSects {
		sects = 4
	}
	setup := (sects + 1) * 512
	img := make([]byte, setup+o.protSize)
	le := binary.LittleEndian
	if o.zeroSects {
		img[offSetupSects] = 0
	} else {
		img[offSetupSects] = o.setupSects
	}
	syssize := o.syssize
	if syssize == 0 && !o.noSyssize {
		syssize = uint32((o.protSize + 15) / 16)
	}
	le.PutUint32(img[offSyssize:], syssize)
	le.PutUint16(img[offVidMode:], 0xffff)
	le.PutUint16(img[offBootFlag:], bootFlagMagic)
	img[offJump], img[offJump+1] = 0xeb, o.jumpByte
	copy(img[offHeader:], hdrSMagic)
	le.PutUint16(img[offVersion:], o.version)
	img[offLoadflags] = o.loadflags
	le.PutUint32(img[offCode32Start:], 0x100000)
	le.PutUint32(img[offInitrdAddrMax:], o.initrdAddrMax)
	le.PutUint32(img[offKernelAlignment:], o.align)
	if o.relocatable {
		img[offRelocatable] = 1
	}
	le.PutUint16(img[offXloadflags:], o.xloadflags)
	le.PutUint32(img[offCmdlineSize:], o.cmdlineSize)
	le.PutUint32(img[offPayloadOffset:], 0x100)
	le.PutUint32(img[offPayloadLength:], uint32(max(o.protSize-0x200, 0)))
	le.PutUint64(img[offPrefAddress:], o.pref)
	le.PutUint32(img[offInitSize:], o.initSize)
	for i := range o.protSize {
		img[setup+i] = protByte(i)
	}
	return img
}

// testSeg is a PT_LOAD segment of a fake ELF kernel.
type testSeg struct {
	paddr uint64
	data  []byte
	memsz uint64 // 0: len(data)
}

type note struct {
	name string
	typ  uint32
	desc []byte
}

// elfOpts describes a fake ELF kernel.
type elfOpts struct {
	class64   bool
	bigEndian bool
	machine   uint16
	phnum     int // overrides e_phnum when nonzero
	segs      []testSeg
	notes     []note
}

func pvhNote(entry uint64, size int) note {
	d := make([]byte, size)
	if size == 4 {
		binary.LittleEndian.PutUint32(d, uint32(entry))
	} else {
		binary.LittleEndian.PutUint64(d, entry)
	}
	return note{name: "Xen", typ: xenElfnotePhys32Entry, desc: d}
}

func align4(n int) int { return (n + 3) &^ 3 }

func encodeNotes(ns []note) []byte {
	var b []byte
	le := binary.LittleEndian
	for _, n := range ns {
		name := append([]byte(n.name), 0)
		h := make([]byte, 12)
		le.PutUint32(h[0:], uint32(len(name)))
		le.PutUint32(h[4:], uint32(len(n.desc)))
		le.PutUint32(h[8:], n.typ)
		b = append(b, h...)
		b = append(b, name...)
		b = append(b, make([]byte, align4(len(name))-len(name))...)
		b = append(b, n.desc...)
		b = append(b, make([]byte, align4(len(n.desc))-len(n.desc))...)
	}
	return b
}

// defaultELF is a 64-bit PVH kernel: text at 16 MiB (entry inside), data
// with bss after it.
func defaultELF() elfOpts {
	text := make([]byte, 0x3000)
	for i := range text {
		text[i] = protByte(i)
	}
	data := make([]byte, 0x1800)
	for i := range data {
		data[i] = byte(0x5a ^ i)
	}
	return elfOpts{
		class64: true,
		machine: emX86_64,
		segs: []testSeg{
			{paddr: 0x1000000, data: text},
			{paddr: 0x1004000, data: data, memsz: 0x4000},
		},
		notes: []note{
			{name: "GNU", typ: 3, desc: []byte{1, 2, 3, 4, 5}},
			{name: "Xen", typ: 6, desc: []byte("linux\x00")},
			pvhNote(0x1000100, 8),
		},
	}
}

func buildELF(o elfOpts) []byte {
	ehSize, phSize := elf32HdrSize, elf32PhdrSize
	if o.class64 {
		ehSize, phSize = elf64HdrSize, elf64PhdrSize
	}
	notes := encodeNotes(o.notes)
	nph := len(o.segs)
	if len(o.notes) > 0 {
		nph++
	}
	phoff := ehSize
	noteOff := phoff + nph*phSize
	dataOff := align4(noteOff + len(notes))
	size := dataOff
	offs := make([]int, len(o.segs))
	for i, s := range o.segs {
		offs[i] = size
		size += len(s.data)
	}
	img := make([]byte, size)
	var bo binary.ByteOrder = binary.LittleEndian
	img[5] = elfDataLSB
	if o.bigEndian {
		bo = binary.BigEndian
		img[5] = 2
	}
	copy(img, elfMagic)
	img[4] = elfClass32
	if o.class64 {
		img[4] = elfClass64
	}
	img[6] = elfVersion
	bo.PutUint16(img[16:], etExec)
	bo.PutUint16(img[18:], o.machine)
	bo.PutUint32(img[20:], 1)
	phnum := nph
	if o.phnum != 0 {
		phnum = o.phnum
	}
	if o.class64 {
		bo.PutUint64(img[32:], uint64(phoff))
		bo.PutUint16(img[52:], uint16(ehSize))
		bo.PutUint16(img[54:], uint16(phSize))
		bo.PutUint16(img[56:], uint16(phnum))
	} else {
		bo.PutUint32(img[28:], uint32(phoff))
		bo.PutUint16(img[40:], uint16(ehSize))
		bo.PutUint16(img[42:], uint16(phSize))
		bo.PutUint16(img[44:], uint16(phnum))
	}
	putPh := func(i int, typ uint32, off, paddr, filesz, memsz, align uint64) {
		ph := img[phoff+i*phSize:]
		if o.class64 {
			bo.PutUint32(ph[0:], typ)
			bo.PutUint32(ph[4:], 5)
			bo.PutUint64(ph[8:], off)
			bo.PutUint64(ph[16:], paddr+0xffffffff80000000)
			bo.PutUint64(ph[24:], paddr)
			bo.PutUint64(ph[32:], filesz)
			bo.PutUint64(ph[40:], memsz)
			bo.PutUint64(ph[48:], align)
		} else {
			bo.PutUint32(ph[0:], typ)
			bo.PutUint32(ph[4:], uint32(off))
			bo.PutUint32(ph[8:], uint32(paddr))
			bo.PutUint32(ph[12:], uint32(paddr))
			bo.PutUint32(ph[16:], uint32(filesz))
			bo.PutUint32(ph[20:], uint32(memsz))
			bo.PutUint32(ph[24:], 5)
			bo.PutUint32(ph[28:], uint32(align))
		}
	}
	for i, s := range o.segs {
		memsz := s.memsz
		if memsz == 0 {
			memsz = uint64(len(s.data))
		}
		putPh(i, ptLoad, uint64(offs[i]), s.paddr, uint64(len(s.data)), memsz, 0x1000)
		copy(img[offs[i]:], s.data)
	}
	if len(o.notes) > 0 {
		putPh(len(o.segs), ptNote, uint64(noteOff), 0, uint64(len(notes)), uint64(len(notes)), 4)
		copy(img[noteOff:], notes)
	}
	return img
}

// patternReader is a large file without the memory: byte i is byte(i ^ i>>9).
type patternReader struct{ size int64 }

func patternByte(i int64) byte { return byte(i ^ i>>9) }

func (p patternReader) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.size {
		return 0, io.EOF
	}
	n := min(int64(len(b)), p.size-off)
	for i := range n {
		b[i] = patternByte(off + i)
	}
	if int(n) < len(b) {
		return int(n), io.EOF
	}
	return int(n), nil
}
