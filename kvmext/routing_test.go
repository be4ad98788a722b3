package kvmext

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"
)

// kernelEntry builds one struct kvm_irq_routing_entry the way the C
// compiler lays it out: four u32 (gsi, type, flags, pad) then a 32-byte
// union, little endian.
func kernelEntry(gsi, typ uint32, u ...uint32) []byte {
	b := make([]byte, 48)
	binary.LittleEndian.PutUint32(b[0:], gsi)
	binary.LittleEndian.PutUint32(b[4:], typ)
	for i, v := range u {
		binary.LittleEndian.PutUint32(b[16+4*i:], v)
	}
	return b
}

func TestDefaultIRQChipRoutesMatchKernel(t *testing.T) {
	// default_routing[]: ROUTING_ENTRY2(0..15) = IOAPIC then PIC entry,
	// ROUTING_ENTRY1(16..23) = IOAPIC only.
	var want []RoutingEntry
	for irq := uint32(0); irq < 16; irq++ {
		pic := uint32(IRQChipPICMaster)
		if irq >= 8 {
			pic = IRQChipPICSlave
		}
		want = append(want,
			RoutingEntry{GSI: irq, Type: RouteIRQChip, Chip: IRQChipIOAPIC, Pin: irq},
			RoutingEntry{GSI: irq, Type: RouteIRQChip, Chip: pic, Pin: irq % 8})
	}
	for irq := uint32(16); irq < 24; irq++ {
		want = append(want, RoutingEntry{GSI: irq, Type: RouteIRQChip, Chip: IRQChipIOAPIC, Pin: irq})
	}
	got := DefaultIRQChipRoutes()
	if len(got) != 40 || len(got) != len(want) {
		t.Fatalf("%d default routes, want 40", len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestEncodeRoutingByteExact(t *testing.T) {
	entries := []RoutingEntry{
		IRQChipRoute(0, IRQChipIOAPIC, 0),
		IRQChipRoute(9, IRQChipPICSlave, 1),
		MSIRoute(24, 0xFEE01000, 0x4031),
		MSIRoute(4000, 0x1_FEE0_0000, 0xFFFF_FFFF),
	}
	got, err := EncodeRouting(entries)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	binary.Write(&want, binary.LittleEndian, [2]uint32{4, 0}) // nr, flags
	want.Write(kernelEntry(0, 1, 2, 0))
	want.Write(kernelEntry(9, 1, 1, 1))
	want.Write(kernelEntry(24, 2, 0xFEE01000, 0, 0x4031))
	want.Write(kernelEntry(4000, 2, 0xFEE00000, 1, 0xFFFFFFFF))
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("encoding differs:\n got %x\nwant %x", got, want.Bytes())
	}
	if len(got) != 8+4*48 {
		t.Errorf("length %d, want %d", len(got), 8+4*48)
	}
}

func TestEncodeRoutingRefuses(t *testing.T) {
	if _, err := EncodeRouting([]RoutingEntry{{GSI: 1, Type: 3}}); err == nil {
		t.Error("unknown route type accepted")
	}
	if _, err := EncodeRouting(make([]RoutingEntry, MaxRoutes+1)); err == nil {
		t.Error("oversized table accepted")
	}
}

// TestSetGSIRoutingKVM sends the default table plus MSI routes to a real
// VM and binds an irqfd to an MSI GSI: KVM checks the layout (a wrong
// entry size or type is EINVAL).
func TestSetGSIRoutingKVM(t *testing.T) {
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
	if n, err := CheckExtension(f.Fd(), CapIRQRouting); err != nil || n < 64 {
		t.Fatalf("KVM_CAP_IRQ_ROUTING = %d, %v", n, err)
	}
	routes := append(DefaultIRQChipRoutes(), MSIRoute(24, 0xFEE00000, 0x41), MSIRoute(25, 0xFEE01000, 0x42))
	if err := SetGSIRouting(vmFd, routes); err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := IRQFD(vmFd, efd, 24, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := IRQFD(vmFd, efd, 24, IRQFDDeassign, 0); err != nil {
		t.Fatal(err)
	}
	// The legacy lines still work after the table was replaced.
	if err := IRQLine(vmFd, 4, true); err != nil {
		t.Fatal(err)
	}
	// KVM checks flags (must be 0 for irqchip routes) and the pin (below
	// 24 for the IOAPIC): a misplaced field would slip through.
	if err := SetGSIRouting(vmFd, []RoutingEntry{{GSI: 30, Type: RouteIRQChip, Flags: 1, Chip: IRQChipIOAPIC, Pin: 1}}); err == nil {
		t.Error("KVM accepted flags on an irqchip route; the flags field is misplaced")
	}
	if err := SetGSIRouting(vmFd, []RoutingEntry{IRQChipRoute(30, IRQChipIOAPIC, 30)}); err == nil {
		t.Error("KVM accepted IOAPIC pin 30; the pin field is misplaced")
	}
}
