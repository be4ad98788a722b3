package pci

import (
	"bytes"
	"encoding/binary"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/kvmext"
)

// fakeKVM records what the router asks of KVM.
type fakeKVM struct {
	mu     sync.Mutex
	tables [][]kvmext.RoutingEntry
	irqfds map[uint32]int // gsi -> fd while assigned
}

func (f *fakeKVM) SetGSIRouting(e []kvmext.RoutingEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tables = append(f.tables, append([]kvmext.RoutingEntry(nil), e...))
	return nil
}

func (f *fakeKVM) IRQFD(fd int, gsi uint32, deassign bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if deassign {
		delete(f.irqfds, gsi)
	} else {
		f.irqfds[gsi] = fd
	}
	return nil
}

func (f *fakeKVM) last() []kvmext.RoutingEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tables[len(f.tables)-1]
}

// kernelRoutingEntry lays out struct kvm_irq_routing_entry by hand.
func kernelRoutingEntry(gsi, typ uint32, u ...uint32) []byte {
	b := make([]byte, 48)
	binary.LittleEndian.PutUint32(b[0:], gsi)
	binary.LittleEndian.PutUint32(b[4:], typ)
	for i, v := range u {
		binary.LittleEndian.PutUint32(b[16+4*i:], v)
	}
	return b
}

func TestKVMRouterTable(t *testing.T) {
	fk := &fakeKVM{irqfds: map[uint32]int{}}
	gsis, _ := NewIDAllocator("gsi", 24, 1023)
	router := newKVMRouter(fk, gsis, quietLog())
	x, err := NewMSIX(3, router, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	// Route vectors 0 and 2 as a guest would, through the table region.
	write := func(v int, addr uint32, data uint32, ctl uint32) {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint32(b[0:], addr)
		binary.LittleEndian.PutUint32(b[8:], data)
		binary.LittleEndian.PutUint32(b[12:], ctl)
		for off := 0; off < 16; off += 4 {
			x.Table().Write(uint64(v*16+off), b[off:off+4])
		}
	}
	x.setControl(true, false)
	write(0, 0xFEE00000, 0x4021, 0)
	write(2, 0xFEE03000, 0x4023, 0)

	// The complete table: KVM's 40 default irqchip routes, then one MSI
	// route per routed vector (GSIs 24 and 26), byte for byte as the
	// kernel's struct kvm_irq_routing.
	got, err := kvmext.EncodeRouting(fk.last())
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	binary.Write(&want, binary.LittleEndian, [2]uint32{42, 0})
	for irq := uint32(0); irq < 24; irq++ {
		want.Write(kernelRoutingEntry(irq, 1, 2, irq)) // IOAPIC pin irq
		if irq < 16 {
			want.Write(kernelRoutingEntry(irq, 1, irq/8, irq%8)) // PIC master/slave
		}
	}
	want.Write(kernelRoutingEntry(24, 2, 0xFEE00000, 0, 0x4021))
	want.Write(kernelRoutingEntry(26, 2, 0xFEE03000, 0, 0x4023))
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("routing table\n got %x\nwant %x", got, want.Bytes())
	}
	// Each routed, unmasked vector has its eventfd bound to its GSI.
	fd0, _ := x.VectorEventFD(0)
	fd2, _ := x.VectorEventFD(2)
	if fk.irqfds[24] != fd0 || fk.irqfds[26] != fd2 || len(fk.irqfds) != 2 {
		t.Errorf("irqfds %v, want 24->%d 26->%d", fk.irqfds, fd0, fd2)
	}
	// Masking unbinds the irqfd; the route stays.
	write(2, 0xFEE03000, 0x4023, 1)
	if _, ok := fk.irqfds[26]; ok {
		t.Error("masked vector still bound")
	}
	// A signal on the eventfd while masked (vhost) is pending, visible in
	// the PBA without being consumed, and delivered by the unmask.
	if err := signalEventfd(fd2); err != nil {
		t.Fatal(err)
	}
	pba := make([]byte, 8)
	x.PBA().Read(0, pba)
	if pba[0] != 4 {
		t.Errorf("PBA %x, want bit 2", pba)
	}
	write(2, 0xFEE03000, 0x4023, 0)
	if fk.irqfds[26] != fd2 {
		t.Error("vector 2 not bound again on unmask")
	}
	if !eventfdReadable(fd2) {
		t.Error("pending signal not re-signalled after the irqfd was bound")
	}
	// Closing removes the routes and frees the GSIs.
	x.Close()
	if tab := fk.last(); len(tab) != 40 {
		t.Errorf("%d routes after close, want the 40 defaults", len(tab))
	}
	if gsis.InUse() != 0 {
		t.Errorf("%d GSIs still allocated", gsis.InUse())
	}
	if len(fk.irqfds) != 0 {
		t.Errorf("irqfds left: %v", fk.irqfds)
	}
}

// TestKVMRouterRealVM runs the router against a real VM: KVM accepts the
// table (default + MSI routes) and the irqfds, and a Notify goes through.
func TestKVMRouterRealVM(t *testing.T) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	defer f.Close()
	vmFd, err := kvm.CreateVM(f.Fd())
	if err != nil {
		t.Fatalf("KVM_CREATE_VM: %v", err)
	}
	defer unix.Close(int(vmFd))
	if err := kvm.CreateIRQChip(vmFd); err != nil {
		t.Fatalf("KVM_CREATE_IRQCHIP: %v", err)
	}
	gsis, _ := NewIDAllocator("gsi", 24, 1023)
	router := NewKVMRouter(vmFd, gsis, quietLog())
	x, err := NewMSIX(2, router, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	x.setControl(true, false)
	b := make([]byte, 4)
	for v := range 2 {
		for off, val := range []uint32{0xFEE00000, 0, 0x30 + uint32(v), 0} {
			binary.LittleEndian.PutUint32(b, val)
			x.Table().Write(uint64(v*16+4*off), b)
		}
	}
	if x.Masked(0) || x.Masked(1) {
		t.Fatal("vectors masked after programming")
	}
	if len(router.Table()) != 42 {
		t.Errorf("%d routes, want 42", len(router.Table()))
	}
	if err := x.Notify(1); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if gsis.InUse() != 0 {
		t.Errorf("GSIs leaked: %d", gsis.InUse())
	}
}

// TestKVMRouterDeliversToLAPIC follows MSI-X vectors all the way into a
// real vCPU's local APIC: Notify on an unmasked vector sets the vector's
// IRR bit, a masked one does not until it is unmasked, and a write to the
// vector's eventfd (what vhost does) is delivered like Notify.
func TestKVMRouterDeliversToLAPIC(t *testing.T) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	defer f.Close()
	vmFd, err := kvm.CreateVM(f.Fd())
	if err != nil {
		t.Fatalf("KVM_CREATE_VM: %v", err)
	}
	defer unix.Close(int(vmFd))
	if err := kvm.CreateIRQChip(vmFd); err != nil {
		t.Fatalf("KVM_CREATE_IRQCHIP: %v", err)
	}
	vcpuFd, err := kvm.CreateVCPU(vmFd, 0)
	if err != nil {
		t.Fatalf("KVM_CREATE_VCPU: %v", err)
	}
	defer unix.Close(int(vcpuFd))
	const lapicSVR, lapicIRR = 0xF0, 0x200
	var st kvm.LAPICState
	if err := kvm.GetLocalAPIC(vcpuFd, &st); err != nil {
		t.Fatal(err)
	}
	st.Regs[lapicSVR+1] |= 1 // APIC software enable (SVR bit 8)
	if err := kvm.SetLocalAPIC(vcpuFd, &st); err != nil {
		t.Fatal(err)
	}
	irr := func(vec int) bool {
		var s kvm.LAPICState
		if err := kvm.GetLocalAPIC(vcpuFd, &s); err != nil {
			t.Fatal(err)
		}
		return s.Regs[lapicIRR+vec/32*0x10+vec%32/8]&(1<<(vec%8)) != 0
	}
	waitIRR := func(vec int) bool {
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if irr(vec) {
				return true
			}
		}
		return false
	}

	gsis, _ := NewIDAllocator("gsi", 24, 1023)
	x, err := NewMSIX(1, NewKVMRouter(vmFd, gsis, quietLog()), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	entry := func(vec int, masked bool) {
		b := make([]byte, 4)
		ctl := uint32(0)
		if masked {
			ctl = 1
		}
		// Fixed delivery, edge, to APIC ID 0 (physical destination).
		for off, v := range []uint32{0xFEE00000, 0, uint32(vec), ctl} {
			binary.LittleEndian.PutUint32(b, v)
			x.Table().Write(uint64(4*off), b)
		}
	}
	x.setControl(true, false)
	entry(0x41, false)
	if err := x.Notify(0); err != nil {
		t.Fatal(err)
	}
	if !waitIRR(0x41) {
		t.Fatal("vector 0x41 not in the LAPIC's IRR after Notify")
	}
	entry(0x52, true)
	x.Notify(0)
	time.Sleep(20 * time.Millisecond)
	if irr(0x52) || !x.PendingBit(0) {
		t.Fatalf("masked vector delivered (IRR %v) or not pending (%v)", irr(0x52), x.PendingBit(0))
	}
	entry(0x52, false)
	if !waitIRR(0x52) {
		t.Fatal("pending vector 0x52 not delivered on unmask")
	}
	entry(0x63, false)
	fd, _ := x.VectorEventFD(0)
	if err := signalEventfd(fd); err != nil {
		t.Fatal(err)
	}
	if !waitIRR(0x63) {
		t.Fatal("a write to the vector's eventfd was not delivered")
	}
}

func TestEventfdPendingHelpers(t *testing.T) {
	gsis, _ := NewIDAllocator("gsi", 24, 25)
	r := newKVMRouter(&fakeKVM{irqfds: map[uint32]int{}}, gsis, quietLog())
	v, err := r.NewVector()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.Pending() {
		t.Error("fresh eventfd pending")
	}
	if p, err := v.TakePending(); p || err != nil {
		t.Errorf("TakePending on empty eventfd: %v %v", p, err)
	}
	v.Trigger()
	v.Trigger()
	if !v.Pending() {
		t.Error("Pending missed the signal")
	}
	if !v.Pending() {
		t.Error("Pending consumed the signal")
	}
	if p, err := v.TakePending(); !p || err != nil {
		t.Errorf("TakePending: %v %v", p, err)
	}
	if v.Pending() {
		t.Error("still pending after TakePending")
	}
	if err := v.Attach(true); err == nil {
		t.Error("attach without a route accepted")
	}
}
