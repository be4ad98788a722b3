package pci

import (
	"testing"
)

// bridgeWindows reads a bridge's windows back through configuration cycles.
func (r *rig) bridgeWindows(bus, dev uint8) (io, mem, pref Range) {
	iobl := r.cfRead(bus, dev, 0, RegIOBase, 2)
	io = Range{uint64(iobl&0xF0) << 8, uint64(iobl>>8&0xF0)<<8 | 0xFFF}
	ml := r.cfRead(bus, dev, 0, RegMemBase, 4)
	mem = Range{uint64(ml&0xFFF0) << 16, uint64(ml>>16&0xFFF0)<<16 | 0xFFFFF}
	pl := r.cfRead(bus, dev, 0, RegPrefBase, 4)
	pu, plu := r.cfRead(bus, dev, 0, RegPrefBaseUpper, 4), r.cfRead(bus, dev, 0, RegPrefLimitUpper, 4)
	pref = Range{uint64(pl&0xFFF0)<<16 | uint64(pu)<<32, uint64(pl>>16&0xFFF0)<<16 | 0xFFFFF | uint64(plu)<<32}
	return
}

// barOf reads BAR i of a function back (address, 64-bit aware).
func (r *rig) barOf(bus, dev uint8, i int) uint64 {
	lo := r.cfRead(bus, dev, 0, RegBAR0+4*i, 4)
	if lo&barIOSpace != 0 {
		return uint64(lo & barIOMask)
	}
	a := uint64(lo & barMemMask)
	if lo&barMemType64 != 0 {
		a |= uint64(r.cfRead(bus, dev, 0, RegBAR0+4*i+4, 4)) << 32
	}
	return a
}

func TestEnumerateTopology(t *testing.T) {
	r := newRig(t)
	f0, f1, f2, _, _ := buildTopology(t, r)
	if err := r.root.Enumerate(); err != nil {
		t.Fatal(err)
	}
	// Bus numbers, depth first: 00:02.0 -> bus 1 (sub 2), 01:01.0 -> bus 2.
	if got := r.cfRead(0, 2, 0, RegPrimaryBus, 4) & 0xFFFFFF; got != 0x020100 {
		t.Errorf("00:02.0 buses %#06x, want pri 0 sec 1 sub 2", got)
	}
	if got := r.cfRead(1, 1, 0, RegPrimaryBus, 4) & 0xFFFFFF; got != 0x020201 {
		t.Errorf("01:01.0 buses %#06x, want pri 1 sec 2 sub 2", got)
	}
	// Every BAR has an address in the right pool and decodes.
	for _, tc := range []struct {
		f        *testFunction
		bus, dev uint8
	}{{f0, 0, 1}, {f1, 1, 0}, {f2, 2, 3}} {
		for _, i := range []int{0, 1, 2, 4} {
			a, ok := r.root.BARAddress(tc.f, i)
			if !ok {
				t.Errorf("%02x:%02x.0 BAR %d does not decode", tc.bus, tc.dev, i)
				continue
			}
			if a != r.barOf(tc.bus, tc.dev, i) {
				t.Errorf("BARAddress %#x != register %#x", a, r.barOf(tc.bus, tc.dev, i))
			}
			var pool *AddressSpace
			switch i {
			case 0, 1:
				pool = r.alloc.MMIO32
			case 2:
				pool = r.alloc.MMIO64
			case 4:
				pool = r.alloc.IO
			}
			size := tc.f.cfg.bars[i].Size
			if !pool.Window().Contains(a, size) || a%size != 0 {
				t.Errorf("%02x:%02x.0 BAR %d at %#x: not an aligned address of %v", tc.bus, tc.dev, i, a, pool.Window())
			}
		}
		// Memory and I/O decoding on, bus mastering left to the driver.
		if cmd := tc.f.cfg.Command(); cmd != CmdIO|CmdMemory {
			t.Errorf("%02x:%02x.0 command %#x, want IO|MEM", tc.bus, tc.dev, cmd)
		}
	}
	// Windows nest: bridge 1 covers everything on buses 1-2, bridge 2 what
	// is on bus 2.
	check := func(bus, dev uint8, fns ...*testFunction) {
		io, mem, pref := r.bridgeWindows(bus, dev)
		for _, f := range fns {
			for _, i := range []int{0, 1, 2, 4} {
				a, _ := r.root.BARAddress(f, i)
				w := map[int]Range{0: mem, 1: mem, 2: pref, 4: io}[i]
				if !w.Contains(a, f.cfg.bars[i].Size) {
					t.Errorf("bridge %02x:%02x.0 window %#x-%#x misses BAR %d at %#x", bus, dev, w.Start, w.End, i, a)
				}
			}
		}
		if mem.Start%memWindowGranularity != 0 || io.Start%ioWindowGranularity != 0 {
			t.Errorf("windows not on their granularity: %v %v", mem, io)
		}
	}
	check(0, 2, f1, f2)
	check(1, 1, f2)
	// INTx routing registers: bus 0 slot 1 pin A -> GSI 17; 01:00.0 pin B
	// swizzles to pin B of slot 2 -> GSI 19; 02:03.0 pin A: slot 3 -> pin D
	// at 01:01.0, slot 1 -> pin A at 00:02.0 -> GSI 18.
	for _, tc := range []struct {
		bus, dev uint8
		gsi      uint32
	}{{0, 1, 17}, {1, 0, 19}, {2, 3, 18}} {
		if got := r.cfRead(tc.bus, tc.dev, 0, RegInterruptLine, 1); got != tc.gsi {
			t.Errorf("%02x:%02x.0 interrupt line %d, want %d", tc.bus, tc.dev, got, tc.gsi)
		}
	}
	if err := r.root.Enumerate(); err == nil {
		t.Error("second Enumerate accepted")
	}
	if _, err := r.root.Bus0().Add(newTestFunction(t, nil, 0)); err == nil {
		t.Error("hotplug after enumeration accepted")
	}
}

func TestEnumerateEmptyBridgeKeepsWindowsClosed(t *testing.T) {
	r := newRig(t)
	if _, err := r.root.Bus0().AddBridge(); err != nil {
		t.Fatal(err)
	}
	if err := r.root.Enumerate(); err != nil {
		t.Fatal(err)
	}
	io, mem, pref := r.bridgeWindows(0, 1)
	if io.Size() != 0 || mem.Size() != 0 || pref.Size() != 0 {
		t.Errorf("empty bridge windows open: %v %v %v", io, mem, pref)
	}
	if got := r.cfRead(0, 1, 0, RegPrimaryBus, 4) & 0xFFFFFF; got != 0x010100 {
		t.Errorf("bus numbers %#x", got)
	}
	if got := r.cfRead(0, 1, 0, RegCommand, 2); got != 0 {
		t.Errorf("empty bridge command %#x, want 0 (nothing to forward)", got)
	}
}

func TestEnumerateWithout64BitWindow(t *testing.T) {
	r := newRig(t)
	r.alloc.MMIO64 = nil
	f := newTestFunction(t, nil, PinNone)
	r.root.Bus0().Add(f)
	if err := r.root.Enumerate(); err != nil {
		t.Fatal(err)
	}
	a, ok := r.root.BARAddress(f, 2)
	if !ok || !r.alloc.MMIO32.Window().Contains(a, 0x4000) {
		t.Errorf("64-bit prefetchable BAR at %#x (%v), want inside MMIO32", a, ok)
	}
}

func TestEnumerateExhaustion(t *testing.T) {
	r := newRig(t)
	// 16 KiB of I/O ports hold four bridge I/O windows of 4 KiB; a fifth
	// bridge with an I/O BAR behind it cannot be placed.
	for range 5 {
		br, err := r.root.Bus0().AddBridge()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := br.Secondary().Add(newTestFunction(t, nil, PinNone)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.root.Enumerate(); err == nil {
		t.Error("Enumerate placed five 4 KiB I/O windows in 16 KiB")
	}
}
