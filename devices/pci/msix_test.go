package pci

import (
	"encoding/binary"
	"errors"
	"testing"
)

// msixRig is a test function with a 4-vector MSI-X table in BAR 1, on bus
// 0 slot 1, enumerated.
type msixRig struct {
	*rig
	f     *testFunction
	table uint64 // BAR 1 address
	cap   int
}

func newMSIXRig(t *testing.T) *msixRig {
	r := newRig(t)
	f := newTestFunction(t, r.router, PinA)
	if _, err := r.root.Bus0().Add(f); err != nil {
		t.Fatal(err)
	}
	if err := r.root.Enumerate(); err != nil {
		t.Fatal(err)
	}
	table, ok := r.root.BARAddress(f, 1)
	if !ok {
		t.Fatal("MSI-X BAR not mapped")
	}
	return &msixRig{rig: r, f: f, table: table, cap: f.cfg.msixCap}
}

func (m *msixRig) ctl() uint16 { return uint16(m.cfRead(0, 1, 0, m.cap+2, 2)) }

func (m *msixRig) setCtl(enable, fmask bool) {
	v := uint32(0)
	if enable {
		v |= msixCtlEnable
	}
	if fmask {
		v |= msixCtlFuncMask
	}
	m.cfWrite(0, 1, 0, m.cap+2, 2, v)
}

func (m *msixRig) writeEntry(v int, addr uint64, data uint32, masked bool) {
	b := make([]byte, 4)
	put := func(off int, x uint32) {
		binary.LittleEndian.PutUint32(b, x)
		m.mmio.Write(m.table+uint64(v*16+off), b)
	}
	// Linux (__pci_write_msi_msg): address, data, then vector control.
	put(0, uint32(addr))
	put(4, uint32(addr>>32))
	put(8, data)
	ctl := uint32(0)
	if masked {
		ctl = 1
	}
	put(12, ctl)
}

func (m *msixRig) setMask(v int, masked bool) {
	b := make([]byte, 4)
	if masked {
		b[0] = 1
	}
	m.mmio.Write(m.table+uint64(v*16+12), b)
}

func (m *msixRig) pba() uint64 {
	b := make([]byte, 8)
	m.mmio.Read(m.table+0x800, b)
	return binary.LittleEndian.Uint64(b)
}

func (m *msixRig) vec(v int) *fakeVector { return m.router.vectors[v] }

func TestMSIXCapability(t *testing.T) {
	m := newMSIXRig(t)
	// Control: table size N-1 read-only; enable and function mask writable.
	if got := m.ctl(); got != 3 {
		t.Errorf("control %#x, want table size 3", got)
	}
	m.cfWrite(0, 1, 0, m.cap+2, 2, 0xFFFF)
	if got := m.ctl(); got != 0xC003 {
		t.Errorf("control after writing ones %#x, want 0xc003", got)
	}
	if got := m.cfRead(0, 1, 0, m.cap+4, 4); got != 0x00000001 {
		t.Errorf("table offset/BIR %#x, want BAR 1 offset 0", got)
	}
	if got := m.cfRead(0, 1, 0, m.cap+8, 4); got != 0x00000801 {
		t.Errorf("PBA offset/BIR %#x, want BAR 1 offset 0x800", got)
	}
	m.cfWrite(0, 1, 0, m.cap+4, 4, 0)
	if got := m.cfRead(0, 1, 0, m.cap+4, 4); got != 1 {
		t.Errorf("table offset writable: %#x", got)
	}
}

func TestMSIXTableResetAndMasks(t *testing.T) {
	m := newMSIXRig(t)
	// Every vector starts masked; reserved bits of vector control and the
	// address's low two bits are read-only.
	b := make([]byte, 4)
	for v := range 4 {
		m.mmio.Read(m.table+uint64(v*16+12), b)
		if binary.LittleEndian.Uint32(b) != 1 {
			t.Errorf("vector %d control %x, want masked", v, b)
		}
	}
	m.writeEntry(0, 0xFEE00003, 0x41, true)
	m.mmio.Write(m.table+12, []byte{0xFF, 0xFF, 0xFF, 0xFF})
	m.mmio.Read(m.table, b)
	if got := binary.LittleEndian.Uint32(b); got != 0xFEE00000 {
		t.Errorf("address %#x, want the low bits cleared", got)
	}
	m.mmio.Read(m.table+12, b)
	if got := binary.LittleEndian.Uint32(b); got != 1 {
		t.Errorf("vector control %#x, want only the mask bit", got)
	}
	// QWORD access of address low/high.
	q := make([]byte, 8)
	m.mmio.Read(m.table, q)
	if binary.LittleEndian.Uint64(q) != 0xFEE00000 {
		t.Errorf("QWORD read % x", q)
	}
	// Misaligned access: ignored / all ones.
	m.mmio.Read(m.table+2, b)
	if binary.LittleEndian.Uint32(b) != 0xFFFFFFFF {
		t.Errorf("misaligned read % x", b)
	}
}

func TestMSIXDeliveryMaskingAndPending(t *testing.T) {
	m := newMSIXRig(t)
	x := m.f.msix
	if err := x.Notify(0); !errors.Is(err, ErrMSIXDisabled) {
		t.Errorf("Notify with MSI-X off: %v", err)
	}
	if err := x.Notify(4); !errors.Is(err, ErrNoVector) {
		t.Errorf("Notify(4) of 4: %v", err)
	}
	// Linux's msix_capability_init: enable with the function masked,
	// program the entries, clear the function mask.
	m.setCtl(true, true)
	m.writeEntry(0, 0xFEE00000, 0x41, false)
	m.writeEntry(1, 0xFEE01000, 0x42, false)
	if m.vec(0).attached {
		t.Error("vector attached while the function is masked")
	}
	if err := x.Notify(0); err != nil {
		t.Fatal(err)
	}
	if m.pba() != 1 {
		t.Errorf("PBA %#x, want bit 0 pending under the function mask", m.pba())
	}
	m.setCtl(true, false)
	v0 := m.vec(0)
	if !v0.attached || v0.addr != 0xFEE00000 || v0.data != 0x41 {
		t.Fatalf("vector 0 after unmask: %+v", v0)
	}
	if len(v0.delivered) != 1 || m.pba() != 0 {
		t.Errorf("pending vector not delivered once on unmask: %v, PBA %#x", v0.delivered, m.pba())
	}
	// Unmasked: Notify delivers straight away.
	if err := x.Notify(1); err != nil {
		t.Fatal(err)
	}
	if got := m.vec(1).delivered; len(got) != 1 || got[0] != 0x42 {
		t.Errorf("vector 1 delivered %v", got)
	}
	// Per-vector mask: detached, notification pending, delivered on unmask.
	m.setMask(1, true)
	if m.vec(1).attached {
		t.Error("masked vector still attached")
	}
	x.Notify(1)
	x.Notify(1)
	if m.pba() != 2 || !x.PendingBit(1) || !x.Masked(1) {
		t.Errorf("PBA %#x, want bit 1", m.pba())
	}
	m.setMask(1, false)
	if got := m.vec(1).delivered; len(got) != 2 {
		t.Errorf("after unmask vector 1 delivered %d times, want 2 (one pending delivery)", len(got))
	}
	// A backend writing the eventfd directly while masked (vhost) shows in
	// the PBA and is delivered on unmask.
	m.setMask(0, true)
	m.vec(0).Trigger()
	if m.pba() != 1 {
		t.Errorf("PBA %#x, want bit 0 from the eventfd", m.pba())
	}
	m.setMask(0, false)
	if got := m.vec(0).delivered; len(got) != 2 || m.pba() != 0 {
		t.Errorf("eventfd signal not delivered on unmask: %v, PBA %#x", got, m.pba())
	}
	// Re-routing: the guest rewrites the message of a masked vector.
	m.setMask(0, true)
	m.writeEntry(0, 0xFEE02000, 0x51, false)
	if v0.addr != 0xFEE02000 || v0.data != 0x51 || !v0.attached {
		t.Errorf("vector 0 not re-routed: %+v", v0)
	}
	// Writing the data of an unmasked vector re-routes immediately.
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, 0x52)
	m.mmio.Write(m.table+8, b)
	if v0.data != 0x52 {
		t.Errorf("unmasked re-route: data %#x", v0.data)
	}
	// Disabling MSI-X detaches everything and drops pending bits.
	m.setMask(1, true)
	x.Notify(1)
	m.setCtl(false, false)
	if v0.attached || m.vec(1).attached || x.Enabled() {
		t.Error("vectors attached with MSI-X disabled")
	}
	m.setCtl(true, false)
	if got := m.vec(1).delivered; len(got) != 2 {
		t.Errorf("a pending bit survived disabling MSI-X: %d deliveries", len(got))
	}
	if fd, ok := x.VectorEventFD(2); !ok || fd != m.vec(2).EventFD() {
		t.Errorf("VectorEventFD(2) = %d %v", fd, ok)
	}
	if _, ok := x.VectorEventFD(9); ok {
		t.Error("VectorEventFD of a vector outside the table")
	}
}

func TestMSIXInvalidAddressNotRouted(t *testing.T) {
	m := newMSIXRig(t)
	m.setCtl(true, false)
	m.writeEntry(2, 0x12340000, 0x99, false) // not the local APIC: a DMA write
	if m.vec(2).attached || m.vec(2).routed {
		t.Error("vector with a non-APIC address routed")
	}
	m.f.msix.Notify(2)
	if m.pba() != 4 {
		t.Errorf("PBA %#x, want the undeliverable vector pending", m.pba())
	}
	m.writeEntry(2, 0xFEE00000, 0x99, false)
	if got := m.vec(2).delivered; len(got) != 1 {
		t.Errorf("pending vector not delivered once its address is valid: %v", got)
	}
}

func TestMSIXDisablesINTx(t *testing.T) {
	m := newMSIXRig(t)
	line := m.line(17) // slot 1 pin A
	m.f.cfg.SetINTx(true)
	if !line.get() {
		t.Fatal("INTx not asserted")
	}
	m.setCtl(true, false)
	if line.get() {
		t.Error("INTx still driven with MSI-X enabled")
	}
	if m.cfRead(0, 1, 0, RegStatus, 2)&StatusINTx == 0 {
		t.Error("interrupt status bit must follow the device, not the masking")
	}
	m.setCtl(false, false)
	if !line.get() {
		t.Error("INTx not driven again after MSI-X was disabled")
	}
}

func TestMSIXClose(t *testing.T) {
	m := newMSIXRig(t)
	if err := m.root.Close(); err != nil {
		t.Fatal(err)
	}
	for i, v := range m.router.vectors {
		if !v.closed {
			t.Errorf("vector %d not closed", i)
		}
	}
	if _, ok := m.f.msix.VectorEventFD(0); ok {
		t.Error("eventfd handed out after Close")
	}
}

func TestAddMSIXRefuses(t *testing.T) {
	router := &fakeRouter{}
	x, err := NewMSIX(8, router, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		l    MSIXLayout
	}{
		{"no such BAR", MSIXLayout{TableBAR: 3, PBABAR: 3}},
		{"I/O BAR", MSIXLayout{TableBAR: 4, PBABAR: 4}},
		{"unaligned", MSIXLayout{TableBAR: 1, TableOffset: 4, PBABAR: 1, PBAOffset: 0x800}},
		{"table and PBA overlap", MSIXLayout{TableBAR: 1, PBABAR: 1, PBAOffset: 0x40}},
		{"outside the BAR", MSIXLayout{TableBAR: 1, TableOffset: 0xFF8, PBABAR: 1, PBAOffset: 0x800}},
		{"over another region", MSIXLayout{TableBAR: 0, PBABAR: 0, PBAOffset: 0x800}},
	} {
		f := newTestFunction(t, nil, PinNone)
		if _, err := f.cfg.AddMSIX(x, tc.l); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", tc.name, err)
		}
		// A refused layout leaves the BARs as they were.
		if n := len(f.cfg.bars[1].regions); n != 0 {
			t.Errorf("%s: BAR 1 has %d regions after the refusal", tc.name, n)
		}
	}
	if _, err := NewMSIX(0, router, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("0 vectors: %v", err)
	}
	if _, err := NewMSIX(2049, router, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("2049 vectors: %v", err)
	}
}
