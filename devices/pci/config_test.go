package pci

import (
	"encoding/binary"
	"errors"
	"testing"
)

func read32(c *Config, off int) uint32 {
	var b [4]byte
	c.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func write32(c *Config, off int, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	c.Write(off, b[:])
}

func TestConfigMasks(t *testing.T) {
	f := newTestFunction(t, nil, PinA)
	c := f.cfg
	id := read32(c, RegVendorID)
	class := read32(c, RegRevision)
	for _, tc := range []struct {
		name      string
		off       int
		write     uint32
		want      uint32
		wantAfter func() uint32
	}{
		{"vendor/device read-only", RegVendorID, 0, id, nil},
		{"class/revision read-only", RegRevision, 0xFFFFFFFF, class, nil},
		// Command: IO, memory, bus master, parity, SERR, INTx disable are
		// writable; special cycles, MWI, VGA snoop, fast back-to-back not.
		// Status (upper half) keeps the capability-list bit.
		{"command writable bits", RegCommand, 0x0000FFFF, uint32(StatusCapList)<<16 | cmdWritableMask, nil},
		{"cache line and latency", RegCacheLineSize, 0xFFFFFFFF, 0x0000FFFF, nil},
		{"subsystem read-only", RegSubsysVendorID, 0, 0x1234<<16 | 0x1AF4, nil},
		{"expansion ROM absent", RegROMAddress, 0xFFFFFFFF, 0, nil},
		{"cap pointer read-only", RegCapPtr, 0xFF, FirstCapOffset, nil},
		{"interrupt line writable, pin read-only", RegInterruptLine, 0xFFFFFFFF, uint32(PinA)<<8 | 0xFF, nil},
		{"unimplemented BAR 5", RegBAR0 + 20, 0xFFFFFFFF, 0, nil},
	} {
		write32(c, tc.off, tc.write)
		if got := read32(c, tc.off); got != tc.want {
			t.Errorf("%s: read %#08x after writing %#08x, want %#08x", tc.name, got, tc.write, tc.want)
		}
	}
	if c.Command() != cmdWritableMask {
		t.Errorf("Command() = %#x, not mirrored", c.Command())
	}
}

func TestStatusWriteOneToClear(t *testing.T) {
	f := newTestFunction(t, nil, PinA)
	c := f.cfg
	// Pretend the device signalled a target abort and a parity error.
	c.mu.Lock()
	c.data[RegStatus+1] |= 0x88
	c.mu.Unlock()
	c.Write(RegStatus, []byte{0, 0x08}) // clear bit 11 only
	if got := read32(c, RegCommand) >> 16; got != StatusCapList|0x8000 {
		t.Errorf("status %#04x, want %#04x", got, StatusCapList|0x8000)
	}
	// Writing zeros clears nothing; writing the read value back clears all.
	c.Write(RegStatus, []byte{0, 0})
	c.Write(RegStatus, []byte{0xFF, 0xFF})
	if got := read32(c, RegCommand) >> 16; got != StatusCapList {
		t.Errorf("status %#04x after clearing, want %#04x", got, StatusCapList)
	}
}

func TestBARSizing(t *testing.T) {
	f := newTestFunction(t, nil, PinNone)
	c := f.cfg
	for _, tc := range []struct {
		name string
		bar  int
		want uint32
	}{
		{"mem32 4K", 0, 0xFFFFF000},
		{"mem64 16K low", 2, 0xFFFFC000 | barMemType64 | barPrefetchable},
		{"mem64 16K high", 3, 0xFFFFFFFF},
		{"io 32", 4, 0xFFFFFFE0 | barIOSpace},
	} {
		off := RegBAR0 + 4*tc.bar
		write32(c, off, 0xFFFFFFFF)
		if got := read32(c, off); got != tc.want {
			t.Errorf("%s: sizing read %#08x, want %#08x", tc.name, got, tc.want)
		}
	}
	// 64-bit size from both halves, as Linux's __pci_read_base computes it.
	lo, hi := read32(c, RegBAR0+8)&barMemMask, read32(c, RegBAR0+12)
	if size := ^(uint64(hi)<<32 | uint64(lo)) + 1; size != 0x4000 {
		t.Errorf("mem64 size %#x, want 0x4000", size)
	}
	// A large 64-bit BAR has writable bits only above its size, in the high
	// half too.
	big, _ := NewConfig(Header{VendorID: 1, DeviceID: 2})
	if err := big.SetBAR(0, BAR{Kind: BARMem64, Size: 1 << 33}); err != nil {
		t.Fatal(err)
	}
	write32(big, RegBAR0, 0xFFFFFFFF)
	write32(big, RegBAR0+4, 0xFFFFFFFF)
	if lo, hi := read32(big, RegBAR0), read32(big, RegBAR0+4); lo != barMemType64 || hi != 0xFFFFFFFE {
		t.Errorf("8 GiB BAR sizing: %#08x %#08x", hi, lo)
	}
	// Writing an address keeps only the bits above the size.
	write32(c, RegBAR0, 0xC0001234)
	if got := read32(c, RegBAR0); got != 0xC0001000 {
		t.Errorf("mem32 address %#08x, want 0xc0001000", got)
	}
}

func TestSetBARRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		i    int
		b    BAR
	}{
		{"not a power of two", 0, BAR{Kind: BARMem32, Size: 0x3000}},
		{"io too large", 0, BAR{Kind: BARIO, Size: 512}},
		{"io prefetchable", 0, BAR{Kind: BARIO, Size: 16, Prefetchable: true}},
		{"mem too small", 0, BAR{Kind: BARMem32, Size: 8}},
		{"64-bit in the last register", 5, BAR{Kind: BARMem64, Size: 0x1000}},
		{"register taken by a 64-bit BAR", 3, BAR{Kind: BARMem32, Size: 0x1000}},
		{"taken", 2, BAR{Kind: BARMem32, Size: 0x1000}},
		{"region outside", 0, BAR{Kind: BARMem32, Size: 0x1000, Regions: []Region{{Offset: 0xF00, Size: 0x200, Dev: &recorder{}}}}},
		{"regions overlap", 0, BAR{Kind: BARMem32, Size: 0x1000, Regions: []Region{{Size: 0x200, Dev: &recorder{}}, {Offset: 0x100, Size: 0x10, Dev: &recorder{}}}}},
		{"region without handler", 0, BAR{Kind: BARMem32, Size: 0x1000, Regions: []Region{{Size: 0x200}}}},
		{"unknown kind", 0, BAR{Size: 0x1000}},
	} {
		// BAR 2 is 64-bit: registers 2 and 3 are taken.
		c, _ := NewConfig(Header{VendorID: 1})
		if err := c.SetBAR(2, BAR{Kind: BARMem64, Size: 0x1000}); err != nil {
			t.Fatal(err)
		}
		if err := c.SetBAR(tc.i, tc.b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: SetBAR = %v, want ErrInvalid", tc.name, err)
		}
	}
	if _, err := NewConfig(Header{VendorID: 0xFFFF}); !errors.Is(err, ErrInvalid) {
		t.Errorf("vendor 0xffff accepted")
	}
	if _, err := NewConfig(Header{VendorID: 1, InterruptPin: 5}); !errors.Is(err, ErrInvalid) {
		t.Errorf("pin 5 accepted")
	}
}

func TestCapabilityList(t *testing.T) {
	c, _ := NewConfig(Header{VendorID: 1})
	if read32(c, RegCommand)>>16&StatusCapList != 0 {
		t.Error("capability-list bit set without capabilities")
	}
	var seenWrite []int
	o1, err := c.AddCapability(Capability{ID: CapIDVendor, Data: make([]byte, 5)})
	if err != nil {
		t.Fatal(err)
	}
	o2, err := c.AddCapability(Capability{ID: CapIDPM, Data: make([]byte, 8),
		Writable: []byte{0, 0, 0, 0, 0x03, 0, 0, 0},
		Write:    func(_ []byte, off, size int) { seenWrite = append(seenWrite, off, size) },
		Read:     func(cp []byte, off, size int) { cp[7] = 0x5A },
	})
	if err != nil {
		t.Fatal(err)
	}
	if o1 != 0x40 || o2 != 0x48 {
		t.Errorf("offsets %#x %#x, want 0x40 0x48 (DWORD aligned)", o1, o2)
	}
	var b [2]byte
	c.Read(RegCapPtr, b[:1])
	if b[0] != 0x40 {
		t.Errorf("capability pointer %#x", b[0])
	}
	c.Read(0x40, b[:])
	if b != [2]byte{CapIDVendor, 0x48} {
		t.Errorf("first capability header % x", b)
	}
	c.Read(0x48, b[:])
	if b != [2]byte{CapIDPM, 0} {
		t.Errorf("last capability header % x", b)
	}
	write32(c, 0x48, 0xFFFFFFFF) // ID and next are read-only
	write32(c, 0x4C, 0xFFFFFFFF)
	if got := read32(c, 0x48); got != uint32(CapIDPM) {
		t.Errorf("header after write %#x", got)
	}
	if got := read32(c, 0x4C); got != 0x5A000003 {
		t.Errorf("PM control after write %#08x, want 0x5a000003 (mask + read hook)", got)
	}
	if len(seenWrite) != 4 || seenWrite[0] != 0 || seenWrite[2] != 4 || seenWrite[3] != 4 {
		t.Errorf("write hook calls %v", seenWrite)
	}
	if _, err := c.AddCapability(Capability{ID: 1, Data: make([]byte, 200)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized capability accepted: %v", err)
	}
}

func TestExtendedConfigReadsZero(t *testing.T) {
	c, _ := NewConfig(Header{VendorID: 1})
	if got := read32(c, 0x100); got != 0 {
		t.Errorf("extended header %#x, want 0 (no extended capabilities)", got)
	}
	write32(c, 0x100, 0xFFFFFFFF)
	if got := read32(c, 0x100); got != 0 {
		t.Errorf("extended space writable")
	}
}

func TestAddAfterAttachRefused(t *testing.T) {
	r := newRig(t)
	f := newTestFunction(t, nil, PinNone)
	if _, err := r.root.Bus0().Add(f); err != nil {
		t.Fatal(err)
	}
	if err := f.cfg.SetBAR(5, BAR{Kind: BARIO, Size: 16}); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetBAR after attach: %v", err)
	}
	if _, err := f.cfg.AddCapability(Capability{ID: 9, Data: make([]byte, 4)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("AddCapability after attach: %v", err)
	}
	if _, err := r.root.Bus0().Add(f); !errors.Is(err, ErrInvalid) {
		t.Errorf("second attach: %v", err)
	}
}
