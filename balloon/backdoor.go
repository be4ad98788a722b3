package balloon

import (
	"log/slog"
	"math"
)

// The VMware backdoor (guest-protocols.md §1.2): `inl (%dx)` with
// DX = 0x5658, EAX = magic, ECX = command; answers in EAX, EBX, ECX, EDX.
const (
	// BackdoorPort is VMWARE_HYPERVISOR_PORT.
	BackdoorPort = 0x5658
	// BackdoorMagic is VMWARE_HYPERVISOR_MAGIC ("VMXh").
	BackdoorMagic = 0x564D5868
)

// Backdoor commands Linux 6.1 sends (arch/x86/kernel/cpu/vmware.c).
const (
	// BackdoorGetVersion: EAX = version, EBX = magic, ECX = product type.
	// Linux sends it only on the DMI detection path (no hypervisor bit).
	BackdoorGetVersion = 10
	// BackdoorGetHz: EAX/EBX = TSC Hz low/high, ECX = APIC bus Hz. Sent
	// always, by vmware_platform_setup.
	BackdoorGetHz = 45
	// BackdoorGetVCPUInfo: EAX bit 3 = x2APIC usable without interrupt
	// remapping, bit 31 reserved (must be 0). Sent by x2apic_available().
	BackdoorGetVCPUInfo = 68
	// BackdoorStealClock: EAX = -1 (not available), 0 (disabled) or 1
	// (enabled). Sent when GETHZ worked.
	BackdoorStealClock = 91
)

const (
	// backdoorVersion and backdoorVMXType are what QEMU's vmport answers
	// to GETVERSION (its vmware-vmx-version and vmware-vmx-type
	// properties; type 2 is "VMware ESX Server").
	backdoorVersion = 6
	backdoorVMXType = 2
	// vcpuInfoLegacyX2APIC is GETVCPU_INFO's bit 3.
	vcpuInfoLegacyX2APIC = 1 << 3
	// backdoorUnsupported answers an unknown command or a call without the
	// magic, as QEMU's vmport does (x-signal-unsupported-cmd): the guest
	// sees the all-ones of a port nobody answers.
	backdoorUnsupported = math.MaxUint32
	// stealClockNotAvailable makes Linux keep its own steal-time
	// accounting: kvmm keeps no per-vCPU stolen-time page.
	stealClockNotAvailable = math.MaxUint32
)

// BackdoorConfig is what the backdoor reports about the VM.
type BackdoorConfig struct {
	// TSCHz is the guest's TSC frequency (KVM_GET_TSC_KHZ * 1000); 0 makes
	// GETHZ fail, and Linux then calibrates the TSC itself.
	TSCHz uint64
	// APICBusHz is the local APIC timer's frequency: 1 GHz with KVM's
	// in-kernel APIC. Linux sets lapic_timer_period = APICBusHz / HZ.
	APICBusHz uint32
	// X2APIC: the vCPUs offer x2APIC (CPUID.1:ECX[21]), and Linux may use
	// it without interrupt remapping (GETVCPU_INFO bit 3).
	X2APIC bool
}

// Backdoor serves the VMware backdoor port. It has no mutable state and is
// safe for concurrent use.
type Backdoor struct {
	cfg BackdoorConfig
	log *slog.Logger
}

// NewBackdoor returns the backdoor of a VM described by cfg.
func NewBackdoor(cfg BackdoorConfig, log *slog.Logger) *Backdoor {
	if log == nil {
		log = slog.Default()
	}
	return &Backdoor{cfg: cfg, log: log}
}

// Serve answers one 4-byte IN on BackdoorPort: r holds the guest's
// registers and receives the answer. Registers a command does not answer
// keep the guest's values, as on VMware.
func (b *Backdoor) Serve(r *Regs) {
	if uint32(r.RAX) != BackdoorMagic {
		r.RAX = backdoorUnsupported
		return
	}
	// QEMU compares the whole of RCX with its command table; so do we (a
	// value with upper bits set is not a command Linux sends).
	switch r.RCX {
	case BackdoorGetVersion:
		r.RAX, r.RBX, r.RCX = backdoorVersion, BackdoorMagic, backdoorVMXType
	case BackdoorGetHz:
		if b.cfg.TSCHz == 0 {
			// EBX stays all ones: Linux's "failed to get TSC freq".
			r.RAX, r.RBX = backdoorUnsupported, math.MaxUint32
			return
		}
		r.RAX, r.RBX = b.cfg.TSCHz&math.MaxUint32, b.cfg.TSCHz>>32
		r.RCX = uint64(b.cfg.APICBusHz)
	case BackdoorGetVCPUInfo:
		r.RAX = 0
		if b.cfg.X2APIC {
			r.RAX = vcpuInfoLegacyX2APIC
		}
	case BackdoorStealClock:
		r.RAX = stealClockNotAvailable
	default:
		b.log.Debug("VMware backdoor: unsupported command", "ecx", r.RCX)
		r.RAX = backdoorUnsupported
	}
}
