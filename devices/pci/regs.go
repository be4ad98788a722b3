package pci

// Configuration space layout (PCI Local Bus 3.0 §6, PCI-to-PCI Bridge 1.2
// §3.2); names follow Linux's include/uapi/linux/pci_regs.h.
const (
	// ConfigSize is a conventional function's configuration space.
	ConfigSize = 256
	// ExtConfigSize is a function's space as ECAM addresses it.
	ExtConfigSize = 4096

	RegVendorID       = 0x00
	RegDeviceID       = 0x02
	RegCommand        = 0x04
	RegStatus         = 0x06
	RegRevision       = 0x08
	RegClassProg      = 0x09
	RegCacheLineSize  = 0x0C
	RegLatencyTimer   = 0x0D
	RegHeaderType     = 0x0E
	RegBIST           = 0x0F
	RegBAR0           = 0x10
	RegSubsysVendorID = 0x2C // type 0
	RegSubsysID       = 0x2E // type 0
	RegROMAddress     = 0x30 // type 0
	RegCapPtr         = 0x34
	RegInterruptLine  = 0x3C
	RegInterruptPin   = 0x3D
	RegMinGnt         = 0x3E // type 0
	RegMaxLat         = 0x3F // type 0

	// Type 1 (bridge) header.
	RegPrimaryBus     = 0x18
	RegSecondaryBus   = 0x19
	RegSubordinateBus = 0x1A
	RegSecLatency     = 0x1B
	RegIOBase         = 0x1C
	RegIOLimit        = 0x1D
	RegSecStatus      = 0x1E
	RegMemBase        = 0x20
	RegMemLimit       = 0x22
	RegPrefBase       = 0x24
	RegPrefLimit      = 0x26
	RegPrefBaseUpper  = 0x28
	RegPrefLimitUpper = 0x2C
	RegIOBaseUpper    = 0x30
	RegIOLimitUpper   = 0x32
	RegBridgeROM      = 0x38
	RegBridgeControl  = 0x3E

	// FirstCapOffset is where capabilities start: after the 64-byte header.
	FirstCapOffset = 0x40
)

// Command register bits.
const (
	CmdIO           = 1 << 0
	CmdMemory       = 1 << 1
	CmdBusMaster    = 1 << 2
	CmdParity       = 1 << 6
	CmdSERR         = 1 << 8
	CmdINTxDisable  = 1 << 10
	cmdWritableMask = CmdIO | CmdMemory | CmdBusMaster | CmdParity | CmdSERR | CmdINTxDisable
)

// Status register bits.
const (
	StatusINTx    = 1 << 3
	StatusCapList = 1 << 4
	// statusW1C are the error bits software clears by writing ones: master
	// data parity error, signalled/received target abort, received master
	// abort, signalled system error, detected parity error.
	statusW1C = 1<<8 | 1<<11 | 1<<12 | 1<<13 | 1<<14 | 1<<15
)

// Header types (bit 7 marks a multi-function device).
const (
	HeaderTypeNormal      = 0x00
	HeaderTypeBridge      = 0x01
	HeaderMultiFunction   = 0x80
	headerTypeLayoutMask  = 0x7F
	bridgeControlWritable = 0x007F // parity, SERR, ISA, VGA, VGA16, master abort mode, secondary bus reset
)

// BAR register low bits.
const (
	barIOSpace      = 1 << 0
	barMemType64    = 2 << 1
	barPrefetchable = 1 << 3
	barMemMask      = ^uint32(0xF)
	barIOMask       = ^uint32(0x3)
)

// Bridge window encodings.
const (
	// memWindowGranularity is the 1 MiB unit of the memory and
	// prefetchable windows; ioWindowGranularity the 4 KiB unit of the I/O
	// window.
	memWindowGranularity = 1 << 20
	ioWindowGranularity  = 1 << 12
	prefRange64          = 0x1 // low nibble of the prefetchable base/limit: 64-bit window
)

// Capability IDs.
const (
	CapIDPM     = 0x01
	CapIDMSI    = 0x05
	CapIDVendor = 0x09
	CapIDSSVID  = 0x0D // bridge subsystem vendor ID
	CapIDPCIe   = 0x10
	CapIDMSIX   = 0x11
)

// Class codes (base class << 16 | subclass << 8 | programming interface).
const (
	ClassHostBridge = 0x060000
	ClassPCIBridge  = 0x060400
)

// INTx pins as the Interrupt Pin register holds them.
const (
	PinNone = 0
	PinA    = 1
	PinB    = 2
	PinC    = 3
	PinD    = 4
)

// Identities of the functions kvmm itself provides. The subsystem IDs are
// the ones QEMU gives its functions (Red Hat/Qumranet "QEMU Virtual
// Machine"), which guests' quirk tables treat as a plain virtual platform.
const (
	VendorIntel  = 0x8086
	VendorRedHat = 0x1B36

	// The host bridge is q35's MCH ID (82G33/G31/P35/P31 DRAM controller):
	// Linux has no chipset quirk that reads MCH registers for it (its
	// pci_mmcfg_probes list E7520/945G/AMD/NVIDIA hosts, not 0x29C0), and
	// guests have seen it under QEMU for years.
	hostBridgeDeviceID = 0x29C0
	// The PCI-to-PCI bridge is QEMU's pci-bridge ID (1b36:0001), not
	// Intel's 82801 bridge (8086:244e): Linux marks every Intel bridge whose
	// device ID is 0x24xx as subtractive-decode ("transparent",
	// arch/x86/pci/fixup.c pci_fixup_transparent_bridge) and would then
	// place BARs outside the windows this bridge positively decodes.
	bridgeDeviceID = 0x0001

	SubsysVendorQEMU = 0x1AF4
	SubsysIDQEMU     = 0x1100
)
