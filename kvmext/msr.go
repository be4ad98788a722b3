package kvmext

// MSR-related ioctls gokvm lacks: user-space MSR exits
// (KVM_CAP_X86_USER_SPACE_MSR), the MSR filter (KVM_X86_SET_MSR_FILTER),
// KVM_GET_SUPPORTED_HV_CPUID, and single-MSR KVM_GET_MSRS/KVM_SET_MSRS
// (gokvm's versions ignore the count KVM returns, so a refused MSR reads as
// 0 instead of failing). Layouts and numbers are those of the Linux UAPI,
// include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (x86-64);
// msr_test.go recomputes each ioctl number from its _IOC definition.

import (
	"fmt"
	"unsafe"

	"github.com/bobuhiro11/gokvm/kvm"
)

// Capabilities of the Hyper-V paths (include/uapi/linux/kvm.h). CapHyperV,
// CapX86UserSpaceMSR and CapX86MSRFilter are in kvmext.go.
const (
	CapHyperVTime         = 96  // KVM_CAP_HYPERV_TIME
	CapHyperVSynIC2       = 148 // KVM_CAP_HYPERV_SYNIC2 (vCPU enable-cap)
	CapHyperVVPIndex      = 149 // KVM_CAP_HYPERV_VP_INDEX
	CapHyperVCPUID        = 167 // KVM_CAP_HYPERV_CPUID: KVM_GET_SUPPORTED_HV_CPUID on a vCPU fd
	CapSysHyperVCPUID     = 191 // KVM_CAP_SYS_HYPERV_CPUID: the same ioctl on /dev/kvm
	CapHyperVEnforceCPUID = 199 // KVM_CAP_HYPERV_ENFORCE_CPUID
)

// Exit reasons user space asks for with KVM_CAP_X86_USER_SPACE_MSR
// (KVM_MSR_EXIT_REASON_*), and the value of kvm_run.msr.reason.
const (
	// MSRExitReasonInval: KVM knows the MSR but refused the access.
	MSRExitReasonInval = 1 << 0
	// MSRExitReasonUnknown: KVM does not implement the MSR.
	MSRExitReasonUnknown = 1 << 1
	// MSRExitReasonFilter: the MSR filter denied the access.
	MSRExitReasonFilter = 1 << 2
)

// EnableUserSpaceMSR makes KVM hand the MSR accesses selected by mask
// (MSRExitReason* bits) to user space as KVM_EXIT_X86_RDMSR/WRMSR instead of
// injecting #GP itself.
func EnableUserSpaceMSR(vmFd uintptr, mask uint64) error {
	if err := EnableCap(vmFd, CapX86UserSpaceMSR, mask); err != nil {
		return fmt.Errorf("user-space MSR exits (mask %#x): %w", mask, err)
	}
	return nil
}

// MSRReason returns kvm_run.msr.reason of a KVM_EXIT_X86_RDMSR/WRMSR: one
// MSRExitReason* value.
func (r *Run) MSRReason() uint32 {
	u := r.b[runUnion:]
	return uint32(u[8]) | uint32(u[9])<<8 | uint32(u[10])<<16 | uint32(u[11])<<24
}

// MSR filter flags (arch/x86/include/uapi/asm/kvm.h).
const (
	// MSRFilterRead and MSRFilterWrite say which accesses a range's bitmap
	// governs (KVM_MSR_FILTER_READ/WRITE).
	MSRFilterRead  = 1 << 0
	MSRFilterWrite = 1 << 1
	// MSRFilterDefaultDeny denies every MSR no range allows
	// (KVM_MSR_FILTER_DEFAULT_DENY); without it the default is allow.
	MSRFilterDefaultDeny = 1 << 0
	// MSRFilterMaxRanges is KVM_MSR_FILTER_MAX_RANGES.
	MSRFilterMaxRanges = 16
	// MSRFilterMaxBitmapBytes is KVM_MSR_FILTER_MAX_BITMAP_SIZE.
	MSRFilterMaxBitmapBytes = 0x600
)

// MSRFilterRange is one range of an MSR filter: NMSRs MSRs from Base, bit i
// of Bitmap set allowing the accesses in Flags to MSR Base+i, clear denying
// them (a denied access exits to user space when MSRExitReasonFilter is
// enabled, else KVM injects #GP).
type MSRFilterRange struct {
	Flags  uint32
	Base   uint32
	NMSRs  uint32
	Bitmap []byte
}

// struct kvm_msr_filter_range: flags, nmsrs, base, 4 bytes of padding,
// __u8 *bitmap (24 bytes).
type msrFilterRange struct {
	Flags  uint32
	NMSRs  uint32
	Base   uint32
	_      uint32
	Bitmap *byte
}

// struct kvm_msr_filter: flags, 4 bytes of padding, 16 ranges (392 bytes).
type msrFilter struct {
	Flags  uint32
	_      uint32
	Ranges [MSRFilterMaxRanges]msrFilterRange
}

// kvmX86SetMSRFilter is KVM_X86_SET_MSR_FILTER = _IOW(KVMIO, 0xc6, struct
// kvm_msr_filter) = 0x4188AEC6.
var kvmX86SetMSRFilter = ioc(iocWrite, 0xc6, unsafe.Sizeof(msrFilter{}))

// MSRFilterBitmapBytes is the bitmap size KVM copies for n MSRs:
// BITS_TO_LONGS(n) * sizeof(long).
func MSRFilterBitmapBytes(n uint32) int { return int((uint64(n) + 63) / 64 * 8) }

// SetMSRFilter installs an MSR filter on the VM (KVM_X86_SET_MSR_FILTER),
// replacing any previous one. KVM copies the bitmaps during the call.
func SetMSRFilter(vmFd uintptr, flags uint32, ranges []MSRFilterRange) error {
	if len(ranges) > MSRFilterMaxRanges {
		return fmt.Errorf("KVM_X86_SET_MSR_FILTER: %d ranges, at most %d", len(ranges), MSRFilterMaxRanges)
	}
	var f msrFilter
	f.Flags = flags
	for i, r := range ranges {
		need := MSRFilterBitmapBytes(r.NMSRs)
		if r.NMSRs == 0 || need > MSRFilterMaxBitmapBytes || len(r.Bitmap) < need {
			return fmt.Errorf("KVM_X86_SET_MSR_FILTER range %d [%#x, +%d): bitmap of %d bytes, need %d (at most %d)",
				i, r.Base, r.NMSRs, len(r.Bitmap), need, MSRFilterMaxBitmapBytes)
		}
		f.Ranges[i] = msrFilterRange{Flags: r.Flags, NMSRs: r.NMSRs, Base: r.Base, Bitmap: &r.Bitmap[0]}
	}
	if _, err := kvm.Ioctl(vmFd, kvmX86SetMSRFilter, uintptr(unsafe.Pointer(&f))); err != nil {
		return fmt.Errorf("KVM_X86_SET_MSR_FILTER: %w", err)
	}
	return nil
}

// maxHVCPUIDEntries bounds KVM_GET_SUPPORTED_HV_CPUID's answer; KVM 6.x
// returns about ten entries (0x40000000-0x40000005, 0x4000000A and the
// synthetic debugger's 0x40000080-0x40000082) and fails with E2BIG when
// the buffer is smaller than that.
const maxHVCPUIDEntries = 64

// struct kvm_cpuid2 with room for maxHVCPUIDEntries entries.
type hvCPUID struct {
	Nent    uint32
	Padding uint32
	Entries [maxHVCPUIDEntries]kvm.CPUIDEntry2
}

// kvmGetSupportedHVCPUID is KVM_GET_SUPPORTED_HV_CPUID = _IOWR(KVMIO, 0xc1,
// struct kvm_cpuid2) = 0xC008AEC1; the size is that of the 8-byte header.
var kvmGetSupportedHVCPUID = ioc(iocRead|iocWrite, 0xc1, unsafe.Sizeof(struct{ Nent, Padding uint32 }{}))

// GetSupportedHVCPUID returns the Hyper-V CPUID leaves the in-kernel
// implementation supports (KVM_GET_SUPPORTED_HV_CPUID). fd is /dev/kvm on a
// host with CapSysHyperVCPUID, else a vCPU fd (CapHyperVCPUID).
func GetSupportedHVCPUID(fd uintptr) ([]kvm.CPUIDEntry2, error) {
	c := &hvCPUID{Nent: maxHVCPUIDEntries}
	if _, err := kvm.Ioctl(fd, kvmGetSupportedHVCPUID, uintptr(unsafe.Pointer(c))); err != nil {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_HV_CPUID: %w", err)
	}
	if c.Nent > maxHVCPUIDEntries {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_HV_CPUID: %d entries, buffer holds %d", c.Nent, maxHVCPUIDEntries)
	}
	return append([]kvm.CPUIDEntry2(nil), c.Entries[:c.Nent]...), nil
}

// struct kvm_msrs with one struct kvm_msr_entry.
type oneMSR struct {
	NMSRs   uint32
	Padding uint32
	Index   uint32
	Reserve uint32
	Data    uint64
}

// KVM_GET_MSRS = _IOWR(KVMIO, 0x88, struct kvm_msrs) and KVM_SET_MSRS =
// _IOW(KVMIO, 0x89, struct kvm_msrs); struct kvm_msrs is an 8-byte header.
var (
	kvmGetMSRs = ioc(iocRead|iocWrite, 0x88, 8)
	kvmSetMSRs = ioc(iocWrite, 0x89, 8)
)

// GetMSR reads one MSR of a vCPU as the host (KVM_GET_MSRS). KVM returns the
// number of MSRs it read; 0 means it refused this one.
func GetMSR(vcpuFd uintptr, index uint32) (uint64, error) {
	m := oneMSR{NMSRs: 1, Index: index}
	n, err := kvm.Ioctl(vcpuFd, kvmGetMSRs, uintptr(unsafe.Pointer(&m)))
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_MSRS %#x: %w", index, err)
	}
	if n != 1 {
		return 0, fmt.Errorf("KVM_GET_MSRS %#x: KVM refused the MSR", index)
	}
	return m.Data, nil
}

// SetMSR writes one MSR of a vCPU as the host (KVM_SET_MSRS).
func SetMSR(vcpuFd uintptr, index uint32, value uint64) error {
	m := oneMSR{NMSRs: 1, Index: index, Data: value}
	n, err := kvm.Ioctl(vcpuFd, kvmSetMSRs, uintptr(unsafe.Pointer(&m)))
	if err != nil {
		return fmt.Errorf("KVM_SET_MSRS %#x=%#x: %w", index, value, err)
	}
	if n != 1 {
		return fmt.Errorf("KVM_SET_MSRS %#x=%#x: KVM refused the MSR", index, value)
	}
	return nil
}
