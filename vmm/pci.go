package vmm

import (
	"errors"
	"fmt"
	"io"

	"github.com/kvmm/kvmm/acpi"
	"github.com/kvmm/kvmm/devices/pci"
	"github.com/kvmm/kvmm/kvmext"
	"github.com/kvmm/kvmm/layout"
)

// PCIConfig is the VM's PCI topology beyond the host bridge (00:00.0),
// which every VM has.
type PCIConfig struct {
	// Bridges is the number of PCI-to-PCI bridges on bus 0, each with an
	// (empty) secondary bus of its own.
	Bridges int `json:"bridges,omitempty"`

	// testHook lets this package's tests attach functions defined in the
	// tests before enumeration. Unexported: no real VM has one.
	testHook *pciTestHook
}

type pciTestHook struct {
	attach func(root *pci.Root, bridges []*pci.Bridge) error
}

// MaxPCIBridges bounds Bridges: bus 0 has 31 slots besides the host bridge.
const MaxPCIBridges = 31

// Validate checks the topology.
func (p PCIConfig) Validate() error {
	if p.Bridges < 0 || p.Bridges > MaxPCIBridges {
		return fmt.Errorf("pci bridges %d: must be between 0 and %d", p.Bridges, MaxPCIBridges)
	}
	return nil
}

// PCI resource windows. The 32-bit window and ECAM come from layout; the
// I/O range is the one PC firmware leaves to PCI (SeaBIOS, QEMU's q35:
// 0xC000-0xFFFF, above every legacy port); the 64-bit window starts at
// 64 GiB, or above RAM when RAM reaches further, 1 GiB aligned, and spans
// 64 GiB: it stays below 2^39, within the physical address width of any
// host KVM runs on.
const (
	pciIOStart         = 0xC000
	pciIOEnd           = 0xFFFF
	pciMMIO64MinStart  = 64 * layout.GiB
	pciMMIO64Align     = layout.GiB
	pciMMIO64Size      = 64 * layout.GiB
	pciMSIFirstGSI     = kvmext.IOAPICPins
	pciDefaultRouteLen = 40 // len(kvmext.DefaultIRQChipRoutes())
)

// pciMMIO64Window is the 64-bit BAR window for a VM with memSize of RAM.
func pciMMIO64Window(memSize uint64) pci.Range {
	ramEnd := uint64(layout.HighRAMStart)
	if memSize > layout.MMIOHoleStart {
		ramEnd += memSize - layout.MMIOHoleStart
	}
	start := max(uint64(pciMMIO64MinStart), (ramEnd+pciMMIO64Align-1)&^uint64(pciMMIO64Align-1))
	return pci.Range{Start: start, End: start + pciMMIO64Size - 1}
}

// acpiConfig describes the machine to the ACPI table builder: vCPUs, S3,
// and the PCI host bridge with its INTx routing and 64-bit window.
func (m *machine) acpiConfig() acpi.Config {
	var prt []acpi.PRTRoute
	for _, e := range pci.PRT() {
		prt = append(prt, acpi.PRTRoute{Slot: e.Slot, Pin: e.Pin, GSI: e.GSI})
	}
	w := pciMMIO64Window(uint64(m.cfg.Memory))
	return acpi.Config{NumCPUs: m.cfg.CPUs, S3: true, PCI: true, PRT: prt,
		PCIMMIO64: &acpi.Window{Start: w.Start, End: w.End}}
}

// pciState is the machine's PCI hierarchy.
type pciState struct {
	root    *pci.Root
	alloc   *pci.Allocator
	router  *pci.KVMRouter
	bridges []*pci.Bridge
}

// addPCI builds the host bridge (CF8/CFC and ECAM), the configured bridges
// and the MSI router, then assigns resources as firmware would. It runs
// after the legacy devices are on the buses and before the ACPI tables are
// built.
func (m *machine) addPCI() error {
	if err := m.cfg.PCI.Validate(); err != nil {
		return err
	}
	// GSIs for MSI routes: 24 up to what KVM's routing table can hold
	// next to the 40 default irqchip routes.
	routes, err := kvmext.CheckExtension(m.kvmFd, kvmext.CapIRQRouting)
	if err != nil || routes <= pciMSIFirstGSI {
		return fmt.Errorf("PCI: host KVM lacks GSI routing (KVM_CAP_IRQ_ROUTING = %d): %w", routes, err)
	}
	lastGSI := min(routes, kvmext.MaxRoutes-pciDefaultRouteLen+pciMSIFirstGSI) - 1
	alloc, err := pci.NewAllocator(pci.AllocatorConfig{
		MMIO32:   pci.Range{Start: layout.PCIMMIO32Start, End: layout.PCIMMIO32End},
		MMIO64:   pciMMIO64Window(uint64(m.cfg.Memory)),
		IO:       pci.Range{Start: pciIOStart, End: pciIOEnd},
		GSIFirst: pciMSIFirstGSI,
		GSILast:  uint32(lastGSI),
	})
	if err != nil {
		return fmt.Errorf("PCI: %w", err)
	}
	log := m.log.With("dev", "pci")
	router := pci.NewKVMRouter(m.vmFd, alloc.GSI, log)
	root, err := pci.NewRoot(pci.RootConfig{PIO: m.pio, MMIO: m.mmio, Allocator: alloc,
		IRQ: m.irqLine, Router: router, Log: log})
	if err != nil {
		return err
	}
	st := &pciState{root: root, alloc: alloc, router: router}
	for i := range m.cfg.PCI.Bridges {
		br, err := root.Bus0().AddBridge()
		if err != nil {
			return fmt.Errorf("PCI bridge %d: %w", i, err)
		}
		st.bridges = append(st.bridges, br)
	}
	if err := m.attachVirtio(root, st.bridges); err != nil {
		return err
	}
	if h := m.cfg.PCI.testHook; h != nil {
		if err := h.attach(root, st.bridges); err != nil {
			return fmt.Errorf("PCI test functions: %w", err)
		}
	}
	m.pci = st
	if err := root.Enumerate(); err != nil {
		return err
	}
	return nil
}

// closePCI releases the MSI vectors' eventfds and routes; it must run
// before the VM fd is closed.
func (m *machine) closePCI() error {
	if m.pci == nil {
		return nil
	}
	return m.pci.root.Close()
}

// pciDump writes the PCI configuration space of every function in the
// `lspci -x` format (`lspci -xxxx` with extended), for `kvmm ctl pci`.
// PCIDump writes every PCI function's configuration space in the text
// format of `lspci -x` (extended: `lspci -xxxx`, 4 KiB per function), which
// the host's `lspci -F FILE -vvv` decodes.
func (vm *VM) PCIDump(w io.Writer, extended bool) error {
	vm.mu.Lock()
	m, state := vm.m, vm.state
	vm.mu.Unlock()
	if state == StateStopped {
		return fmt.Errorf("pci dump: %w: VM is stopped", ErrState)
	}
	return m.pciDump(w, extended)
}

func (m *machine) pciDump(w io.Writer, extended bool) error {
	if m.pci == nil {
		return errors.New("the VM has no PCI bus")
	}
	return m.pci.root.Dump(w, extended)
}
