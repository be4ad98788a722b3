// Package pci is kvmm's PCI hierarchy: the host bridge with both
// configuration mechanisms (CF8/CFC ports and ECAM), buses, conventional
// PCI-to-PCI bridges, BAR decoding on the VM's buses, firmware-like
// resource assignment, MSI-X routed into KVM, and INTx through the IOAPIC.
//
// A device model (virtio-pci) is a Function: it builds a *Config with
// NewConfig, defines its BARs with SetBAR (each BAR a list of Regions whose
// devices.Device handlers answer the guest's accesses), adds its
// capabilities with AddCapability and, for MSI-X, creates an MSIX with
// NewMSIX(n, root.Router(), log) and places it with AddMSIX. Then it is
// added to a bus (root.Bus0().Add or a bridge's Secondary().Add) before
// Root.Enumerate assigns addresses. At run time the device raises
// interrupts with MSIX.Notify(vector) (or Config.SetINTx for INTx when
// MSI-X is off) and learns where its BARs live from Region.Mapped.
//
// The package never hard-codes an address: BARs, bridge windows and GSIs
// come from an Allocator, and the configuration windows from layout.
package pci
