// Package layout is the guest-physical address map of a kvmm VM on x86-64:
// where RAM, firmware tables, boot structures and device windows live. Every
// package that places something in guest memory takes the address from here,
// so two pieces of code never disagree about a location.
package layout

const (
	// KiB, MiB and GiB are byte counts.
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30

	// PageSize is the x86 base page size in bytes.
	PageSize = 4 * KiB
)

// Low memory (below 1 MiB). Linux treats 0x9FC00-0x100000 as reserved and
// never allocates there, so firmware-owned data placed in that range (ACPI
// tables, the FACS that must survive S3) is never overwritten by the guest.
const (
	// GDTAddr holds the boot GDT for the 32-bit PVH and 64-bit entries.
	GDTAddr = 0x500
	// PVHStartInfoAddr is where hvm_start_info goes for a PVH boot.
	PVHStartInfoAddr = 0x6000
	// PVHMemmapAddr follows the start info: the PVH memory map entries.
	PVHMemmapAddr = 0x6100
	// ZeroPageAddr holds struct boot_params for a bzImage boot.
	ZeroPageAddr = 0x7000
	// PML4Addr, PDPTAddr and PDAddr hold identity page tables (4 GiB with
	// 2 MiB pages) for the 64-bit bzImage entry.
	PML4Addr = 0x9000
	PDPTAddr = 0xA000
	PDAddr   = 0xB000 // four 4 KiB page directories: 0xB000-0xEFFF
	// BootStackTop is the initial stack pointer for the boot vCPU.
	BootStackTop = 0x5FF0
	// CmdlineAddr holds the kernel command line (NUL terminated).
	CmdlineAddr = 0x20000
	// CmdlineMax is the largest command line accepted, NUL included.
	CmdlineMax = 4096

	// EBDAStart marks the end of usable low RAM (as on a PC: the EBDA).
	EBDAStart = 0x9FC00
	// ACPIStart..ACPIEnd is the BIOS area where the ACPI tables live. The
	// RSDP sits at ACPIStart, 16-byte aligned, inside the range the ACPI spec
	// tells an OS to scan (0xE0000-0xFFFFF).
	ACPIStart = 0xE0000
	ACPIEnd   = 0x100000

	// HighMemStart is the first byte above the legacy area: the kernel is
	// loaded here (bzImage protected-mode code).
	HighMemStart = 0x100000
)

// The 32-bit MMIO hole below 4 GiB. RAM beyond MMIOHoleStart continues at
// 4 GiB.
const (
	MMIOHoleStart = 0xC0000000
	// PCIMMIO32Start..PCIMMIO32End is the window PCI BARs (32-bit) use.
	PCIMMIO32Start = 0xC0000000
	PCIMMIO32End   = 0xDFFFFFFF
	// ECAMStart is the PCI Express enhanced configuration space (256 buses).
	ECAMStart = 0xE0000000
	ECAMSize  = 256 * MiB
	// IOAPICAddr and LAPICAddr are the architectural interrupt controller
	// addresses the in-kernel irqchip decodes.
	IOAPICAddr = 0xFEC00000
	LAPICAddr  = 0xFEE00000
	// HighRAMStart is where RAM above the hole continues.
	HighRAMStart = 4 * GiB
)

// Legacy I/O ports and interrupt lines.
const (
	COM1Port     = 0x3F8
	COM1IRQ      = 4
	RTCPort      = 0x70
	RTCIRQ       = 8
	I8042Port    = 0x60 // data; 0x64 is status/command
	KbdIRQ       = 1
	AuxIRQ       = 12
	I8042CmdPort = 0x64
	POSTPort     = 0x80
	// DebugExitPort follows QEMU's isa-debug-exit convention: a write of v
	// ends the VM with status (v << 1) | 1.
	DebugExitPort = 0xF4

	// PMBase is the ACPI PM register block: PM1a_EVT (4 bytes) at +0,
	// PM1a_CNT (2 bytes) at +4, PM_TMR (4 bytes) at +8, GPE0 (4 bytes) at
	// +0x0C (status 2, enable 2). The same base QEMU's PIIX4 uses.
	PMBase     = 0x600
	PM1aEvtBlk = PMBase
	PM1aCntBlk = PMBase + 4
	PMTmrBlk   = PMBase + 8
	GPE0Blk    = PMBase + 0x0C
	GPE0BlkLen = 4
	// SCIIRQ is the ACPI system control interrupt (level, active high).
	SCIIRQ = 9
)

// ResetReg is the FADT reset register (system I/O, one byte): writing
// ResetValue to it resets the machine, the first method Linux tries.
const (
	ResetReg   = PMBase + 0x10
	ResetValue = 0x06
)
