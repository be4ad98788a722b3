package pci

import (
	"encoding/binary"
	"testing"
)

// identity is what no configuration write may change.
type identity struct{ id, class, subsys uint32 }

func readIdentity(r *rig, bus, dev uint8) identity {
	return identity{
		id:     r.cfRead(bus, dev, 0, RegVendorID, 4),
		class:  r.cfRead(bus, dev, 0, RegRevision, 4),
		subsys: r.cfRead(bus, dev, 0, RegSubsysVendorID, 4),
	}
}

// checkInvariants verifies what holds whatever the guest wrote: read-only
// identity registers, BAR type bits, capability links, the MSI-X table
// size, and that every mapped region sits where its BAR says.
func checkInvariants(t *testing.T, r *rig, f *testFunction, want identity) {
	t.Helper()
	c := f.cfg
	var b [4]byte
	c.Read(RegVendorID, b[:])
	if got := binary.LittleEndian.Uint32(b[:]); got != want.id {
		t.Fatalf("vendor/device changed to %#x", got)
	}
	c.Read(RegRevision, b[:])
	if got := binary.LittleEndian.Uint32(b[:]); got != want.class {
		t.Fatalf("class/revision changed to %#x", got)
	}
	c.Read(RegSubsysVendorID, b[:])
	if got := binary.LittleEndian.Uint32(b[:]); got != want.subsys {
		t.Fatalf("subsystem changed to %#x", got)
	}
	types := map[int]uint32{0: 0, 1: 0, 2: barMemType64 | barPrefetchable, 4: barIOSpace}
	for i, ty := range types {
		c.Read(RegBAR0+4*i, b[:])
		low := uint32(0xF)
		if ty&barIOSpace != 0 {
			low = 0x3
		}
		if got := binary.LittleEndian.Uint32(b[:]) & low; got != ty {
			t.Fatalf("BAR %d type bits %#x, want %#x", i, got, ty)
		}
	}
	c.Read(RegCapPtr, b[:1])
	seen := 0
	for p := int(b[0]); p != 0; seen++ {
		if p < FirstCapOffset || p > ConfigSize-2 || seen > 48 {
			t.Fatalf("capability list broken at %#x", p)
		}
		c.Read(p+1, b[:1])
		p = int(b[0])
	}
	if seen != 2 {
		t.Fatalf("%d capabilities, want 2", seen)
	}
	if f.msix != nil {
		c.Read(c.msixCap+2, b[:2])
		if binary.LittleEndian.Uint16(b[:])&msixCtlTableSize != 3 {
			t.Fatal("MSI-X table size changed")
		}
	}
	r.root.mu.Lock()
	defer r.root.mu.Unlock()
	for _, bs := range c.bars {
		if bs == nil {
			continue
		}
		for _, rs := range bs.regions {
			if rs.mapped && (!bs.decoding || rs.at != bs.at+rs.Offset) {
				t.Fatalf("BAR %d region %s mapped at %#x, BAR decodes=%v at %#x", bs.index, rs.Name, rs.at, bs.decoding, bs.at)
			}
		}
	}
}

// FuzzConfigWrite throws random configuration writes (any offset, width
// and value, through both mechanisms) at a function behind a bridge, the
// bridge and the host bridge. Nothing may panic, and the invariants hold.
func FuzzConfigWrite(f *testing.F) {
	f.Add([]byte{0x04, 4, 0xFF, 0xFF, 0xFF, 0xFF})                                  // command all ones
	f.Add([]byte{0x10, 4, 0xFF, 0xFF, 0xFF, 0xFF, 0x14, 4, 0, 0, 0, 0xE0})          // size + move BAR 0/1
	f.Add([]byte{0x42, 2, 0x00, 0xC0, 0x00, 0x00})                                  // MSI-X enable + mask
	f.Add([]byte{0x98, 4, 0xFF, 0xFF, 0xFF, 0xFF, 0x9A, 2, 0, 0, 0, 0})             // bridge bus numbers
	f.Add([]byte{0xA0, 4, 0x00, 0xC0, 0x00, 0xC0, 0x84, 2, 0x03, 0x00, 0, 0})       // window + command
	f.Add([]byte{0x00, 4, 0, 0, 0, 0, 0x08, 4, 0, 0, 0, 0, 0x2C, 4, 0, 0, 0, 0})    // identity
	f.Add([]byte{0xFF, 1, 0xFF, 0, 0, 0, 0x3D, 1, 0x00, 0, 0, 0, 0x34, 1, 0x80, 0}) // edges
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newRig(t)
		_, f1, _, _, _ := buildTopology(t, r)
		if err := r.root.Enumerate(); err != nil {
			t.Fatal(err)
		}
		want := readIdentity(r, 1, 0)
		host := readIdentity(r, 0, 0)
		// Each op: reg (bit 7 selects the bridge 00:02.0 instead of
		// 01:00.0; bit 6 the host bridge), width selector, 4 value bytes.
		for len(ops) >= 6 {
			reg, wsel, v := int(ops[0]), ops[1], binary.LittleEndian.Uint32(ops[2:6])
			ops = ops[6:]
			bus, dev := uint8(1), uint8(0)
			switch {
			case wsel&0x80 != 0:
				bus, dev = 0, 0
			case reg&0x80 != 0:
				bus, dev = 0, 2
			}
			n := []int{1, 2, 4, 4}[wsel&3]
			reg = (reg & 0x7F) * 2 & ^(n - 1)
			if wsel&0x40 != 0 {
				r.ecamWrite(bus, dev, 0, reg+int(wsel&0x30)<<4, n, v) // some land past 256
			} else {
				r.cfWrite(bus, dev, 0, reg, n, v)
			}
		}
		// Bus 1 may be unreachable now; read the function directly.
		checkInvariants(t, r, f1, want)
		if got := readIdentity(r, 0, 0); got != host {
			t.Fatalf("host bridge identity changed: %+v", got)
		}
	})
}

// FuzzCF8CFC replays random port I/O on 0xCF8-0xCFF: any width, any
// offset, enable bit on or off. Nothing may panic; reads of absent
// functions are all ones.
func FuzzCF8CFC(f *testing.F) {
	f.Add([]byte{0, 4, 0x00, 0x00, 0x00, 0x80, 4, 4, 0, 0, 0, 0})
	f.Add([]byte{3, 1, 0x01, 0, 0, 0, 0, 4, 0, 0x10, 0, 0x80, 6, 2, 0, 0, 0, 0})
	f.Add([]byte{0, 4, 0x04, 0x10, 0x00, 0x80, 5, 1, 0xFF, 0, 0, 0, 7, 1, 0, 0, 0, 0})
	f.Add([]byte{0, 4, 0xFC, 0xFF, 0xFF, 0xFF, 4, 4, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newRig(t)
		_, f1, _, _, _ := buildTopology(t, r)
		if err := r.root.Enumerate(); err != nil {
			t.Fatal(err)
		}
		want := readIdentity(r, 1, 0)
		// Each op: port offset 0-7 (bit 7: read), width selector, 4 bytes.
		for len(ops) >= 6 {
			port := uint64(ConfigAddressPort) + uint64(ops[0]&7)
			n := []int{1, 2, 4, 4}[ops[1]&3]
			d := append([]byte(nil), ops[2:2+n]...)
			if ops[0]&0x80 != 0 {
				r.pio.Read(port, d)
			} else {
				r.pio.Write(port, d)
			}
			ops = ops[6:]
		}
		checkInvariants(t, r, f1, want)
		if got := r.cfRead(0, 31, 7, 0, 4); got != 0xFFFFFFFF {
			t.Fatalf("absent function reads %#x", got)
		}
	})
}
