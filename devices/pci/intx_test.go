package pci

import "testing"

func TestSwizzleAndPRT(t *testing.T) {
	// Linux's pci_swizzle_interrupt_pin: ((pin - 1 + slot) % 4) + 1.
	for slot := uint8(0); slot < 32; slot++ {
		for pin := uint8(1); pin <= 4; pin++ {
			if got, want := SwizzlePin(slot, pin), (pin-1+slot)%4+1; got != want {
				t.Errorf("SwizzlePin(%d, %d) = %d, want %d", slot, pin, got, want)
			}
		}
	}
	prt := PRT()
	if len(prt) != 128 {
		t.Fatalf("%d _PRT entries, want 32 slots x 4 pins", len(prt))
	}
	seen := map[uint32]bool{}
	for _, e := range prt {
		if e.GSI < 16 || e.GSI > 23 || e.GSI != INTxGSI(e.Slot, e.Pin+1) {
			t.Errorf("entry %+v", e)
		}
		seen[e.GSI] = true
	}
	if len(seen) != 8 {
		t.Errorf("_PRT uses %d GSIs, want all of 16-23", len(seen))
	}
	// Adjacent slots' INTA land on different lines (the rotation).
	if INTxGSI(1, PinA) == INTxGSI(2, PinA) {
		t.Error("no rotation between slots")
	}
}

func TestINTxLevelSharingAndDisable(t *testing.T) {
	r := newRig(t)
	a := newTestFunction(t, nil, PinA) // slot 1: GSI 17
	b := newTestFunction(t, nil, PinA) // slot 9: GSI 17 as well (9 % 8 == 1)
	if _, err := r.root.Bus0().Add(a); err != nil {
		t.Fatal(err)
	}
	if err := r.root.Bus0().AddAt(9, 0, b); err != nil {
		t.Fatal(err)
	}
	line := r.line(17)
	a.cfg.SetINTx(true)
	b.cfg.SetINTx(true)
	if !line.get() {
		t.Fatal("line not asserted")
	}
	a.cfg.SetINTx(false)
	if !line.get() {
		t.Error("shared line dropped while the other function still asserts it")
	}
	b.cfg.SetINTx(false)
	if line.get() {
		t.Error("line still asserted after both deasserted")
	}
	// Level semantics: repeated asserts do not stack.
	a.cfg.SetINTx(true)
	a.cfg.SetINTx(true)
	a.cfg.SetINTx(false)
	if line.get() {
		t.Error("repeated asserts stacked")
	}
	// Interrupt status bit and INTx disable.
	a.cfg.SetINTx(true)
	if r.cfRead(0, 1, 0, RegStatus, 2)&StatusINTx == 0 {
		t.Error("status bit 3 clear while asserted")
	}
	r.cfWrite(0, 1, 0, RegCommand, 2, CmdINTxDisable)
	if line.get() {
		t.Error("line driven with INTx disable set")
	}
	if r.cfRead(0, 1, 0, RegStatus, 2)&StatusINTx == 0 {
		t.Error("status bit must stay set under INTx disable")
	}
	r.cfWrite(0, 1, 0, RegCommand, 2, 0)
	if !line.get() {
		t.Error("line not driven after INTx disable was cleared")
	}
	// Up (a+b), down, up, down, up, down (disable), up (enable).
	if changes := line.changes; changes != 7 {
		t.Errorf("%d level changes, want 7 (no redundant KVM_IRQ_LINE)", changes)
	}
	// A function without a pin ignores SetINTx.
	c := newTestFunction(t, nil, PinNone)
	r.root.Bus0().Add(c)
	c.cfg.SetINTx(true)
	if c.cfg.INTxAsserted() {
		t.Error("pinless function asserted INTx")
	}
}

func TestINTxBehindBridge(t *testing.T) {
	r := newRig(t)
	br, _ := r.root.Bus0().AddBridge() // 00:01.0
	f := newTestFunction(t, nil, PinB)
	if err := br.Secondary().AddAt(2, 0, f); err != nil {
		t.Fatal(err)
	}
	// Pin B of slot 2 -> pin D at the bridge (slot 1) -> GSI 16 + (1+3)%8.
	f.cfg.SetINTx(true)
	if !r.line(20).get() {
		t.Errorf("expected GSI 20 asserted; lines: %v", r.lines)
	}
}
