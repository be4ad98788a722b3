package loader

import (
	"bytes"
	"errors"
	"testing"

	"github.com/kvmm/kvmm/layout"
)

// fuzzSeeds are small valid images of each format plus a few broken ones.
func fuzzSeeds() [][]byte {
	small := defaultBz()
	small.protSize = 4096
	elf32 := defaultELF()
	elf32.class64, elf32.machine = false, emI386
	elf32.notes = []note{pvhNote(0x1000100, 4)}
	return [][]byte{
		buildBzImage(small),
		withBz(func(o *bzOpts) { o.protSize = 1024; o.zeroSects = true; o.relocatable = false }),
		buildELF(defaultELF()),
		buildELF(elf32),
		withELF(func(o *elfOpts) { o.notes = nil }),
		{},
		[]byte(elfMagic),
	}
}

// FuzzDetect: any bytes give a format or an ErrBadImage error, never a panic.
func FuzzDetect(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		format, err := Detect(bytes.NewReader(data), int64(len(data)))
		switch {
		case err == nil && format != FormatBzImage && format != FormatPVH:
			t.Fatalf("Detect = %v with no error", format)
		case err != nil && !errors.Is(err, ErrBadImage):
			t.Fatalf("Detect error %q does not wrap ErrBadImage", err)
		}
	})
}

// FuzzLoad loads arbitrary kernel bytes, also with a KernelSize that lies
// about the reader's length: it must fail cleanly or return an entry point
// inside guest RAM.
func FuzzLoad(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s, int16(0), "console=ttyS0")
	}
	f.Add(fuzzSeeds()[0], int16(100), "")
	f.Add(fuzzSeeds()[2], int16(-100), "x")
	mem := newMem(f, 64*layout.MiB)
	f.Fuzz(func(t *testing.T, data []byte, sizeDelta int16, cmdline string) {
		size := int64(len(data)) + int64(sizeDelta)
		e, err := Load(mem, Params{
			Kernel: bytes.NewReader(data), KernelSize: size,
			Initrd: patternReader{4096}, InitrdSize: 4096,
			Cmdline: cmdline,
		})
		if err != nil {
			return
		}
		if !mem.Contains(e.RIP, 1) {
			t.Fatalf("entry %+v: RIP outside guest RAM", e)
		}
		if e.Mode != ModeLong64 && e.Mode != ModePVH32 {
			t.Fatalf("entry %+v: no mode", e)
		}
	})
}
