package pci_test

import (
	"fmt"
	"log/slog"

	"github.com/kvmm/kvmm/devices"
	"github.com/kvmm/kvmm/devices/pci"
)

// regs stands for a device model's register block.
type regs struct{}

func (regs) Read(_ uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
}
func (regs) Write(uint64, []byte) {}

// Example builds a function the way a virtio-pci transport would: a
// 64-bit prefetchable BAR holding its register blocks, the MSI-X table and
// PBA in a 32-bit BAR, vendor capabilities pointing into the BARs, INTx
// pin A; then the firmware-like enumeration places everything and the
// device raises vector 0.
func Example() {
	pio, mmio := devices.NewBus("pio"), devices.NewBus("mmio")
	alloc, _ := pci.NewAllocator(pci.AllocatorConfig{
		MMIO32: pci.Range{Start: 0xC0000000, End: 0xDFFFFFFF},
		MMIO64: pci.Range{Start: 64 << 30, End: 128<<30 - 1},
		IO:     pci.Range{Start: 0xC000, End: 0xFFFF},
		// In a VM: GSIs from 24, and pci.NewKVMRouter(vmFd, alloc.GSI, log).
		GSIFirst: 24, GSILast: 1023,
	})
	log := slog.New(slog.DiscardHandler)
	root, err := pci.NewRoot(pci.RootConfig{PIO: pio, MMIO: mmio, Allocator: alloc, Router: exampleRouter{},
		IRQ: func(gsi uint32) devices.IRQLine { return devices.IRQLineFunc(func(bool) error { return nil }) }, Log: log})
	if err != nil {
		fmt.Println(err)
		return
	}

	cfg, _ := pci.NewConfig(pci.Header{VendorID: 0x1AF4, DeviceID: 0x1044, Revision: 1, Class: 0x00FF00,
		SubsysVendorID: 0x1AF4, SubsysID: 0x1100, InterruptPin: pci.PinA})
	var notifyAt uint64
	_ = cfg.SetBAR(4, pci.BAR{Kind: pci.BARMem64, Size: 0x4000, Prefetchable: true, Regions: []pci.Region{
		{Name: "common", Offset: 0x0000, Size: 0x1000, Dev: regs{}},
		{Name: "notify", Offset: 0x3000, Size: 0x1000, Dev: regs{},
			// Where an ioeventfd would be (re)registered.
			Mapped: func(gpa uint64, mapped bool) {
				if mapped {
					notifyAt = gpa
				}
			}},
	}})
	_ = cfg.SetBAR(1, pci.BAR{Kind: pci.BARMem32, Size: 0x1000})
	msix, _ := pci.NewMSIX(2, root.Router(), log)
	_, _ = cfg.AddMSIX(msix, pci.MSIXLayout{TableBAR: 1, TableOffset: 0, PBABAR: 1, PBAOffset: 0x800})
	// struct virtio_pci_cap for the common configuration: BAR 4, offset 0.
	_, _ = cfg.AddCapability(pci.Capability{ID: pci.CapIDVendor,
		Data: []byte{0, 0, 16, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0}})

	slot, _ := root.Bus0().Add(cfg)
	if err := root.Enumerate(); err != nil {
		fmt.Println(err)
		return
	}
	bar4, _ := root.BARAddress(cfg, 4)
	fmt.Printf("slot %d, BAR 4 at %#x, notify at %#x\n", slot, bar4, notifyAt)
	// Before the driver enables MSI-X the device falls back to INTx.
	fmt.Println(msix.Notify(0))
	// Output:
	// slot 1, BAR 4 at 0x1000000000, notify at 0x1000003000
	// MSI-X is disabled
}

// exampleRouter stands for pci.KVMRouter outside a VM.
type exampleRouter struct{}

func (exampleRouter) NewVector() (pci.MSIVector, error) { return &exampleVector{}, nil }

type exampleVector struct{}

func (*exampleVector) SetMessage(uint64, uint32) error { return nil }
func (*exampleVector) Attach(bool) error               { return nil }
func (*exampleVector) Trigger() error                  { return nil }
func (*exampleVector) TakePending() (bool, error)      { return false, nil }
func (*exampleVector) Pending() bool                   { return false }
func (*exampleVector) EventFD() int                    { return -1 }
func (*exampleVector) Close() error                    { return nil }
