package pci

import (
	"encoding/binary"
	"testing"

	"github.com/kvmm/kvmm/layout"
)

func TestHostBridgeIdentity(t *testing.T) {
	r := newRig(t)
	if got := r.cfRead(0, 0, 0, RegVendorID, 4); got != 0x29C08086 {
		t.Errorf("00:00.0 ID %#08x, want 0x29c08086", got)
	}
	if got := r.cfRead(0, 0, 0, RegRevision, 4) >> 8; got != ClassHostBridge {
		t.Errorf("00:00.0 class %#06x", got)
	}
	if got := r.cfRead(0, 0, 0, RegHeaderType, 1); got != HeaderTypeNormal {
		t.Errorf("header type %#x", got)
	}
	if got := r.cfRead(0, 1, 0, RegVendorID, 4); got != 0xFFFFFFFF {
		t.Errorf("empty slot reads %#x, want all ones", got)
	}
	if got := r.cfRead(3, 0, 0, RegVendorID, 4); got != 0xFFFFFFFF {
		t.Errorf("bus 3 (no bridge) reads %#x, want all ones", got)
	}
}

func TestConfigAddressRegister(t *testing.T) {
	r := newRig(t)
	get := func() uint32 {
		var b [4]byte
		r.pio.Read(ConfigAddressPort, b[:])
		return binary.LittleEndian.Uint32(b[:])
	}
	put := func(v uint32) {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		r.pio.Write(ConfigAddressPort, b[:])
	}
	// Linux's pci_check_type1: outb(0x01, 0xCFB); save; outl(0x80000000);
	// inl must return 0x80000000.
	r.pio.Write(ConfigAddressPort+3, []byte{0x01})
	put(0x80000000)
	if got := get(); got != 0x80000000 {
		t.Errorf("CF8 reads %#x, want 0x80000000", got)
	}
	// Reserved bits 30:24 and the two low bits read as zero.
	put(0xFFFFFFFF)
	if got := get(); got != 0x80FFFFFC {
		t.Errorf("CF8 reads %#x, want 0x80fffffc", got)
	}
	// Byte and word accesses are not CONFIG_ADDRESS (0xCF9 is reset control).
	r.pio.Write(ConfigAddressPort, []byte{0, 0})
	if got := get(); got != 0x80FFFFFC {
		t.Errorf("a word write changed CF8 to %#x", got)
	}
	// Enable bit clear: the data port reads all ones and ignores writes.
	put(0x00000000) // 00:00.0 register 0, enable bit clear
	var d [4]byte
	r.pio.Read(ConfigDataPort, d[:])
	if binary.LittleEndian.Uint32(d[:]) != 0xFFFFFFFF {
		t.Errorf("CFC with enable clear reads % x", d)
	}
}

func TestCFCWidthsAndAlignment(t *testing.T) {
	r := newRig(t)
	// Byte, word and DWORD reads at every offset of a DWORD: the register
	// is (CF8 & 0xFC) + (port - 0xCFC).
	for reg := 0; reg < 4; reg++ {
		if got, want := r.cfRead(0, 0, 0, reg, 1), uint32([]byte{0x86, 0x80, 0xC0, 0x29}[reg]); got != want {
			t.Errorf("byte at %d = %#x, want %#x", reg, got, want)
		}
	}
	if got := r.cfRead(0, 0, 0, 2, 2); got != 0x29C0 {
		t.Errorf("word at 2 = %#x", got)
	}
	// An access crossing the data window reads all ones.
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], cf8Addr(0, 0, 0, 0))
	r.pio.Write(ConfigAddressPort, b[:])
	d := make([]byte, 4)
	r.pio.Read(ConfigDataPort+2, d)
	if binary.LittleEndian.Uint32(d) != 0xFFFFFFFF {
		t.Errorf("DWORD read at 0xCFE = % x", d)
	}
	// Byte write lands in the right byte (interrupt line of the host bridge
	// is writable).
	r.cfWrite(0, 0, 0, RegInterruptLine, 1, 0x5A)
	if got := r.cfRead(0, 0, 0, RegInterruptLine, 4); got&0xFF != 0x5A {
		t.Errorf("interrupt line %#x", got)
	}
}

// buildTopology: host bridge, a test function on bus 0, a bridge with a
// function and a nested bridge with a function.
func buildTopology(t *testing.T, r *rig) (f0, f1, f2 *testFunction, br1, br2 *Bridge) {
	t.Helper()
	f0 = newTestFunction(t, r.router, PinA)
	if _, err := r.root.Bus0().Add(f0); err != nil {
		t.Fatal(err)
	}
	br1, err := r.root.Bus0().AddBridge()
	if err != nil {
		t.Fatal(err)
	}
	f1 = newTestFunction(t, r.router, PinB)
	if _, err := br1.Secondary().Add(f1); err != nil {
		t.Fatal(err)
	}
	br2, err = br1.Secondary().AddBridge()
	if err != nil {
		t.Fatal(err)
	}
	f2 = newTestFunction(t, nil, PinA)
	if err := br2.Secondary().AddAt(3, 0, f2); err != nil {
		t.Fatal(err)
	}
	return
}

func TestBridgeForwardingAndBusNumbers(t *testing.T) {
	r := newRig(t)
	_, _, _, br1, _ := buildTopology(t, r)
	// Before anyone programs bus numbers only bus 0 is reachable.
	if got := r.cfRead(1, 0, 0, 0, 4); got != 0xFFFFFFFF {
		t.Errorf("bus 1 reachable before programming: %#x", got)
	}
	// The bridge is at 00:02.0 (slot 0 host, 1 test function).
	if got := r.cfRead(0, 2, 0, RegVendorID, 4); got != 0x00011B36 {
		t.Fatalf("bridge ID %#x", got)
	}
	if got := r.cfRead(0, 2, 0, RegHeaderType, 1); got != HeaderTypeBridge {
		t.Errorf("bridge header type %#x", got)
	}
	if got := r.cfRead(0, 2, 0, RegRevision, 4) >> 8; got != ClassPCIBridge {
		t.Errorf("bridge class %#x", got)
	}
	// Program as Linux's pci_scan_bridge does: primary/secondary/subordinate.
	r.cfWrite(0, 2, 0, RegPrimaryBus, 4, 0x00_05_01_00) // pri 0, sec 1, sub 5
	if got := r.cfRead(0, 2, 0, RegPrimaryBus, 4); got&0xFFFFFF != 0x050100 {
		t.Errorf("bus numbers read back %#x", got)
	}
	// Bus 1 (type 1 -> type 0 at the bridge): the test function at slot 0
	// and the nested bridge at slot 1.
	if got := r.cfRead(1, 0, 0, RegVendorID, 4); got != 0x107F1AF4 {
		t.Errorf("01:00.0 ID %#x", got)
	}
	if got := r.cfRead(1, 1, 0, RegVendorID, 4); got != 0x00011B36 {
		t.Errorf("01:01.0 ID %#x", got)
	}
	// Bus 2 is inside 1..5 but the nested bridge has no numbers yet.
	if got := r.cfRead(2, 3, 0, RegVendorID, 4); got != 0xFFFFFFFF {
		t.Errorf("bus 2 reachable before the nested bridge is programmed: %#x", got)
	}
	r.cfWrite(1, 1, 0, RegPrimaryBus, 4, 0x00_02_02_01)
	if got := r.cfRead(2, 3, 0, RegVendorID, 4); got != 0x107F1AF4 {
		t.Errorf("02:03.0 ID %#x", got)
	}
	// Bus 6 is outside the first bridge's subordinate range.
	r.cfWrite(1, 1, 0, RegPrimaryBus, 4, 0x00_06_06_01)
	if got := r.cfRead(6, 3, 0, RegVendorID, 4); got != 0xFFFFFFFF {
		t.Errorf("bus 6 reachable beyond subordinate 5: %#x", got)
	}
	// A secondary number not above the current bus does not loop.
	r.cfWrite(0, 2, 0, RegPrimaryBus, 4, 0x00_FF_00_00)
	if got := r.cfRead(7, 0, 0, RegVendorID, 4); got != 0xFFFFFFFF {
		t.Errorf("bus 7 with secondary 0: %#x", got)
	}
	_ = br1
}

func TestECAMMatchesCF8(t *testing.T) {
	r := newRig(t)
	buildTopology(t, r)
	if err := r.root.Enumerate(); err != nil {
		t.Fatal(err)
	}
	for _, a := range [][3]uint8{{0, 0, 0}, {0, 1, 0}, {0, 2, 0}, {1, 0, 0}, {1, 1, 0}, {2, 3, 0}, {0, 5, 0}, {9, 0, 0}} {
		for reg := 0; reg < ConfigSize; reg += 4 {
			cf, ec := r.cfRead(a[0], a[1], a[2], reg, 4), r.ecamRead(a[0], a[1], a[2], reg, 4)
			if cf != ec {
				t.Errorf("%02x:%02x.%d reg %#x: CF8/CFC %#08x, ECAM %#08x", a[0], a[1], a[2], reg, cf, ec)
			}
		}
	}
	// A write through one mechanism is seen through the other.
	r.ecamWrite(1, 0, 0, RegInterruptLine, 1, 0x33)
	if got := r.cfRead(1, 0, 0, RegInterruptLine, 1); got != 0x33 {
		t.Errorf("ECAM write not seen through CF8: %#x", got)
	}
	// ECAM reaches 4096 bytes; a conventional function has nothing past 256.
	if got := r.ecamRead(0, 0, 0, 0x100, 4); got != 0 {
		t.Errorf("extended space %#x", got)
	}
	// ECAM QWORD read = two DWORDs.
	d := make([]byte, 8)
	base, _ := r.root.ECAM()
	r.mmio.Read(base, d)
	if binary.LittleEndian.Uint64(d) != uint64(r.cfRead(0, 0, 0, 4, 4))<<32|uint64(r.cfRead(0, 0, 0, 0, 4)) {
		t.Errorf("ECAM QWORD % x", d)
	}
	if base != layout.ECAMStart {
		t.Errorf("ECAM at %#x, want layout.ECAMStart", base)
	}
}

func TestMultiFunction(t *testing.T) {
	r := newRig(t)
	f0 := newTestFunction(t, nil, PinNone)
	f1 := newTestFunction(t, nil, PinNone)
	if err := r.root.Bus0().AddAt(4, 1, f1); err == nil {
		t.Error("function 1 accepted before function 0")
	}
	if err := r.root.Bus0().AddAt(4, 0, f0); err != nil {
		t.Fatal(err)
	}
	if got := r.cfRead(0, 4, 0, RegHeaderType, 1); got != HeaderTypeNormal {
		t.Errorf("single-function header type %#x", got)
	}
	if err := r.root.Bus0().AddAt(4, 1, f1); err != nil {
		t.Fatal(err)
	}
	if got := r.cfRead(0, 4, 0, RegHeaderType, 1); got != HeaderMultiFunction {
		t.Errorf("function 0 header type %#x, want multi-function", got)
	}
	if got := r.cfRead(0, 4, 1, RegVendorID, 2); got != 0x1AF4 {
		t.Errorf("04.1 vendor %#x", got)
	}
	// Add picks the lowest free slot: 0 is the host bridge, 4 is taken.
	f2 := newTestFunction(t, nil, PinNone)
	if slot, err := r.root.Bus0().Add(f2); err != nil || slot != 1 {
		t.Errorf("Add: slot %d, %v", slot, err)
	}
}

// findRange returns the base of the range whose name ends with name.
func findRange(t *testing.T, r *rig, io bool, name string) (uint64, bool) {
	t.Helper()
	bus := r.mmio
	if io {
		bus = r.pio
	}
	for _, s := range bus.Stats() {
		if len(s.Name) >= len(name) && s.Name[len(s.Name)-len(name):] == name {
			return s.Base, true
		}
	}
	return 0, false
}

func TestBARDecodingAndRelocation(t *testing.T) {
	r := newRig(t)
	f := newTestFunction(t, nil, PinNone)
	if _, err := r.root.Bus0().Add(f); err != nil { // slot 1
		t.Fatal(err)
	}
	// Address programmed but memory decoding off: nothing mapped.
	r.cfWrite(0, 1, 0, RegBAR0, 4, 0xC0010000)
	r.cfWrite(0, 1, 0, RegBAR0+16, 4, 0xC100)
	if _, ok := findRange(t, r, false, "bar0 regs"); ok {
		t.Fatal("BAR mapped with memory decoding off")
	}
	r.cfWrite(0, 1, 0, RegCommand, 2, CmdMemory)
	base, ok := findRange(t, r, false, "bar0 regs")
	if !ok || base != 0xC0010000 {
		t.Fatalf("BAR 0 at %#x (%v), want 0xc0010000", base, ok)
	}
	if _, ok := findRange(t, r, true, "bar4 ports"); ok {
		t.Error("I/O BAR mapped with I/O decoding off")
	}
	// The guest's access reaches the region's handler at its offset.
	r.mmio.Write(0xC0010010, []byte{1, 2, 3, 4})
	if w := f.regs[0].writes; len(w) != 1 || w[0] != 0x10 {
		t.Errorf("region writes %v, want [0x10]", w)
	}
	// Relocation: the range moves on the bus.
	r.cfWrite(0, 1, 0, RegBAR0, 4, 0xC0020000)
	if base, _ := findRange(t, r, false, "bar0 regs"); base != 0xC0020000 {
		t.Errorf("after relocation BAR 0 at %#x", base)
	}
	if r.mmio.Read(0xC0010010, make([]byte, 4)) {
		t.Error("old BAR address still mapped")
	}
	if addr, ok := r.root.BARAddress(f, 0); !ok || addr != 0xC0020000 {
		t.Errorf("BARAddress = %#x, %v", addr, ok)
	}
	// Sizing with decoding on (which Linux avoids) leaves the BAR at the
	// all-ones pattern: not a usable address, so unmapped, not mapped at
	// 0xFFFFF000 over the APICs.
	r.cfWrite(0, 1, 0, RegBAR0, 4, 0xFFFFFFFF)
	if _, ok := findRange(t, r, false, "bar0 regs"); ok {
		t.Error("BAR mapped at its sizing pattern")
	}
	// A 64-bit BAR above 4 GiB.
	r.cfWrite(0, 1, 0, RegBAR0+8, 4, 0x00000000)
	r.cfWrite(0, 1, 0, RegBAR0+12, 4, 0x10)
	if base, ok := findRange(t, r, false, "bar2 common"); !ok || base != 0x10_0000_0000 {
		t.Errorf("64-bit BAR at %#x (%v)", base, ok)
	}
	// I/O decoding.
	r.cfWrite(0, 1, 0, RegCommand, 2, CmdMemory|CmdIO)
	if base, ok := findRange(t, r, true, "bar4 ports"); !ok || base != 0xC100 {
		t.Errorf("I/O BAR at %#x (%v)", base, ok)
	}
	// Turning memory decoding off removes every memory range.
	r.cfWrite(0, 1, 0, RegCommand, 2, CmdIO)
	for _, n := range []string{"bar0 regs", "bar2 common"} {
		if _, ok := findRange(t, r, false, n); ok {
			t.Errorf("%s still mapped with memory decoding off", n)
		}
	}
}

func TestBAROverlapLeftUnmapped(t *testing.T) {
	r := newRig(t)
	a := newTestFunction(t, nil, PinNone)
	b := newTestFunction(t, nil, PinNone)
	r.root.Bus0().Add(a) // slot 1
	r.root.Bus0().Add(b) // slot 2
	for slot := uint8(1); slot <= 2; slot++ {
		r.cfWrite(0, slot, 0, RegBAR0, 4, 0xC0030000)
		r.cfWrite(0, slot, 0, RegCommand, 2, CmdMemory)
	}
	if _, ok := r.root.BARAddress(a, 0); !ok {
		t.Error("first BAR not mapped")
	}
	// The second is decoded in the registers but refused on the bus.
	if _, ok := findRange(t, r, false, "02.0 bar0 regs"); ok {
		t.Error("overlapping BAR mapped")
	}
	// Moving the first away lets the second map (a later config write
	// retries).
	r.cfWrite(0, 1, 0, RegBAR0, 4, 0xC0040000)
	if base, ok := findRange(t, r, false, "02.0 bar0 regs"); !ok || base != 0xC0030000 {
		t.Errorf("second BAR after the first moved: %#x %v", base, ok)
	}
	// Two BARs trading places in one remap do not collide.
	r.root.mu.Lock()
	a.cfg.write32(RegBAR0, 0xC0030000)
	b.cfg.write32(RegBAR0, 0xC0040000)
	r.root.remap()
	r.root.mu.Unlock()
	if base, _ := findRange(t, r, false, "01.0 bar0 regs"); base != 0xC0030000 {
		t.Errorf("swap: first at %#x", base)
	}
	if base, _ := findRange(t, r, false, "02.0 bar0 regs"); base != 0xC0040000 {
		t.Errorf("swap: second at %#x", base)
	}
}

func TestBridgeWindowsGateDecoding(t *testing.T) {
	r := newRig(t)
	br, err := r.root.Bus0().AddBridge() // 00:01.0
	if err != nil {
		t.Fatal(err)
	}
	f := newTestFunction(t, nil, PinNone)
	br.Secondary().Add(f)
	r.cfWrite(0, 1, 0, RegPrimaryBus, 4, 0x010100)
	r.cfWrite(1, 0, 0, RegBAR0, 4, 0xC0100000)
	r.cfWrite(1, 0, 0, RegBAR0+16, 4, 0xD000)
	r.cfWrite(1, 0, 0, RegCommand, 2, CmdMemory|CmdIO)
	if _, ok := r.root.BARAddress(f, 0); ok {
		t.Fatal("BAR behind a closed bridge decodes")
	}
	// Memory window 0xC0100000-0xC01FFFFF, but bridge decoding still off.
	r.cfWrite(0, 1, 0, RegMemBase, 4, 0xC010C010)
	if _, ok := r.root.BARAddress(f, 0); ok {
		t.Fatal("BAR decodes with the bridge's memory enable off")
	}
	r.cfWrite(0, 1, 0, RegCommand, 2, CmdMemory)
	if addr, ok := r.root.BARAddress(f, 0); !ok || addr != 0xC0100000 {
		t.Fatalf("BAR inside the window: %#x %v", addr, ok)
	}
	// The BAR moves outside the window: no longer forwarded.
	r.cfWrite(1, 0, 0, RegBAR0, 4, 0xC0300000)
	if _, ok := r.root.BARAddress(f, 0); ok {
		t.Error("BAR outside the memory window decodes")
	}
	// The prefetchable window (64-bit) forwards memory too.
	r.cfWrite(0, 1, 0, RegPrefBase, 4, 0xC030C030)
	r.cfWrite(0, 1, 0, RegPrefBaseUpper, 4, 0)
	r.cfWrite(0, 1, 0, RegPrefLimitUpper, 4, 0)
	if _, ok := r.root.BARAddress(f, 0); !ok {
		t.Error("BAR inside the prefetchable window does not decode")
	}
	// I/O: window 0xD000-0xDFFF plus the bridge's I/O enable.
	if _, ok := r.root.BARAddress(f, 4); ok {
		t.Error("I/O BAR decodes through a closed I/O window")
	}
	r.cfWrite(0, 1, 0, RegIOBase, 2, 0xD0D0)
	r.cfWrite(0, 1, 0, RegCommand, 2, CmdMemory|CmdIO)
	if addr, ok := r.root.BARAddress(f, 4); !ok || addr != 0xD000 {
		t.Errorf("I/O BAR %#x %v", addr, ok)
	}
	// Bridge registers read back in their encodings.
	if got := r.cfRead(0, 1, 0, RegIOBase, 2); got != 0xD0D0 {
		t.Errorf("I/O base/limit %#x (16-bit decode, low nibble 0)", got)
	}
	if got := r.cfRead(0, 1, 0, RegPrefBase, 4); got != 0xC031C031 {
		t.Errorf("prefetchable base/limit %#x (64-bit type nibble)", got)
	}
}
