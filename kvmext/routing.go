package kvmext

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/bobuhiro11/gokvm/kvm"
)

// GSI routing (KVM_SET_GSI_ROUTING). gokvm's IRQRoutingEntry is 24 bytes,
// which is neither the kernel's struct kvm_irq_routing_entry (48 bytes) nor
// able to hold an MSI route, so the table is encoded here byte by byte from
// include/uapi/linux/kvm.h:
//
//	struct kvm_irq_routing_entry {
//		__u32 gsi;
//		__u32 type;
//		__u32 flags;
//		__u32 pad;
//		union {
//			struct kvm_irq_routing_irqchip irqchip; /* u32 irqchip, pin */
//			struct kvm_irq_routing_msi msi;         /* u32 address_lo, address_hi, data, devid */
//			...
//			__u32 pad[8];
//		} u;
//	};
//	struct kvm_irq_routing { __u32 nr; __u32 flags; struct kvm_irq_routing_entry entries[]; };

// Routing entry types (KVM_IRQ_ROUTING_*).
const (
	RouteIRQChip = 1
	RouteMSI     = 2
)

// In-kernel irqchips a route can target (KVM_IRQCHIP_*).
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

const (
	// RoutingEntrySize is sizeof(struct kvm_irq_routing_entry).
	RoutingEntrySize = 48
	// routingHeaderSize is sizeof(struct kvm_irq_routing) without entries.
	routingHeaderSize = 8
	// IOAPICPins is the number of pins of KVM's IOAPIC (KVM_IOAPIC_NUM_PINS):
	// GSIs 0-23 belong to the irqchips, MSI routes use GSIs from 24 up.
	IOAPICPins = 24
	// picPins is the number of GSIs that also reach the 8259 pair.
	picPins = 16
	// MaxRoutes is KVM_MAX_IRQ_ROUTES on x86 (4096); KVM refuses larger tables.
	MaxRoutes = 4096
	// CapIRQRouting is KVM_CAP_IRQ_ROUTING: its value is the number of GSIs.
	CapIRQRouting = 25
)

// RoutingEntry is one GSI route. For RouteIRQChip, Chip and Pin are used;
// for RouteMSI, AddressLo, AddressHi and Data.
type RoutingEntry struct {
	GSI   uint32
	Type  uint32
	Flags uint32

	Chip, Pin uint32

	AddressLo, AddressHi, Data uint32
}

// IRQChipRoute routes gsi to a pin of an in-kernel irqchip.
func IRQChipRoute(gsi, chip, pin uint32) RoutingEntry {
	return RoutingEntry{GSI: gsi, Type: RouteIRQChip, Chip: chip, Pin: pin}
}

// MSIRoute routes gsi to an MSI message (x86: no device ID, flags 0).
func MSIRoute(gsi uint32, addr uint64, data uint32) RoutingEntry {
	return RoutingEntry{GSI: gsi, Type: RouteMSI, AddressLo: uint32(addr), AddressHi: uint32(addr >> 32), Data: data}
}

// DefaultIRQChipRoutes is the table KVM_CREATE_IRQCHIP installs on x86
// (default_routing[] in arch/x86/kvm/irq.c, formerly irq_comm.c): GSIs 0-15
// go to the IOAPIC pin of the same number and to the 8259 pin gsi%8 of the
// master (gsi < 8) or slave; GSIs 16-23 to the IOAPIC only. There is no
// GSI 0 -> pin 2 override in KVM (that is a firmware/MADT convention). The
// order is the kernel's: IOAPIC entry first, then the PIC entry.
// KVM_SET_GSI_ROUTING replaces the whole table, so a VMM that adds MSI
// routes must send these again or the legacy lines go dead.
func DefaultIRQChipRoutes() []RoutingEntry {
	r := make([]RoutingEntry, 0, picPins*2+IOAPICPins-picPins)
	for gsi := uint32(0); gsi < IOAPICPins; gsi++ {
		r = append(r, IRQChipRoute(gsi, IRQChipIOAPIC, gsi))
		if gsi < picPins {
			chip := uint32(IRQChipPICMaster)
			if gsi >= 8 {
				chip = IRQChipPICSlave
			}
			r = append(r, IRQChipRoute(gsi, chip, gsi%8))
		}
	}
	return r
}

// EncodeRouting lays out struct kvm_irq_routing with its entries.
func EncodeRouting(entries []RoutingEntry) ([]byte, error) {
	if len(entries) > MaxRoutes {
		return nil, fmt.Errorf("GSI routing table of %d entries: KVM allows %d", len(entries), MaxRoutes)
	}
	b := make([]byte, routingHeaderSize+RoutingEntrySize*len(entries))
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(len(entries)))
	for i, e := range entries {
		o := b[routingHeaderSize+RoutingEntrySize*i:]
		le.PutUint32(o[0:], e.GSI)
		le.PutUint32(o[4:], e.Type)
		le.PutUint32(o[8:], e.Flags)
		u := o[16:]
		switch e.Type {
		case RouteIRQChip:
			le.PutUint32(u[0:], e.Chip)
			le.PutUint32(u[4:], e.Pin)
		case RouteMSI:
			le.PutUint32(u[0:], e.AddressLo)
			le.PutUint32(u[4:], e.AddressHi)
			le.PutUint32(u[8:], e.Data)
		default:
			return nil, fmt.Errorf("GSI %d: routing type %d not supported", e.GSI, e.Type)
		}
	}
	return b, nil
}

// SetGSIRouting replaces the VM's whole GSI routing table
// (KVM_SET_GSI_ROUTING). Pass DefaultIRQChipRoutes() along with any MSI
// routes.
func SetGSIRouting(vmFd uintptr, entries []RoutingEntry) error {
	b, err := EncodeRouting(entries)
	if err != nil {
		return fmt.Errorf("KVM_SET_GSI_ROUTING: %w", err)
	}
	// The ioctl's size field is sizeof(struct kvm_irq_routing), the header.
	_, err = kvm.Ioctl(vmFd, ioc(iocWrite, 0x6a, routingHeaderSize), uintptr(unsafe.Pointer(&b[0])))
	runtime.KeepAlive(b)
	if err != nil {
		return fmt.Errorf("KVM_SET_GSI_ROUTING (%d entries): %w", len(entries), err)
	}
	return nil
}
