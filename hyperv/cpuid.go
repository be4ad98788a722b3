package hyperv

import (
	"fmt"

	"github.com/bobuhiro11/gokvm/kvm"
)

// CPUID leaves (Hyper-V TLFS; Linux include/asm-generic/hyperv-tlfs.h).
const (
	LeafVendor      = 0x40000000 // max leaf, vendor "Microsoft Hv"
	LeafInterface   = 0x40000001 // "Hv#1"
	LeafVersion     = 0x40000002
	LeafFeatures    = 0x40000003
	LeafHints       = 0x40000004
	LeafLimits      = 0x40000005
	LeafHardware    = 0x40000006
	LeafNested      = 0x4000000A
	LeafMax         = LeafNested
	interfaceHv1    = 0x31237648 // "Hv#1": also what makes KVM turn its Hyper-V on
	spinlockNever   = 0xFFFFFFFF // leaf 4 EBX: never notify on spinlock retries
	versionBuild    = 0x00003839 // leaf 2, as KVM reports: build 14393,
	versionMajMinor = 0x000A0000 // version 10.0
)

// Vendor is "Microsoft Hv" as CPUID 0x40000000 EBX, ECX, EDX. Linux's
// ms_hyperv_platform() requires exactly this (KVM's in-kernel leaves say
// "Linux KVM Hv", which Linux does not accept, so kvmm always writes this).
var Vendor = [3]uint32{0x7263694D, 0x666F736F, 0x76482074}

// CPUID 0x40000003 bits.
const (
	eaxTimeRefCount = 1 << 1  // HV_MSR_TIME_REF_COUNT_AVAILABLE
	eaxSynIC        = 1 << 2  // HV_MSR_SYNIC_AVAILABLE
	eaxSynTimer     = 1 << 3  // HV_MSR_SYNTIMER_AVAILABLE
	eaxHypercall    = 1 << 5  // HV_MSR_HYPERCALL_AVAILABLE
	eaxVPIndex      = 1 << 6  // HV_MSR_VP_INDEX_AVAILABLE
	eaxReferenceTSC = 1 << 9  // HV_MSR_REFERENCE_TSC_AVAILABLE
	eaxFrequencies  = 1 << 11 // HV_ACCESS_FREQUENCY_MSRS
	eaxTSCInvariant = 1 << 15 // HV_ACCESS_TSC_INVARIANT
	edxFrequencies  = 1 << 8  // HV_FEATURE_FREQUENCY_MSRS_AVAILABLE
	edxCrash        = 1 << 10 // HV_FEATURE_GUEST_CRASH_MSR_AVAILABLE
	edxSTimerDirect = 1 << 19 // HV_STIMER_DIRECT_MODE_AVAILABLE
)

// featureBits is CPUID 0x40000003 EAX and EDX for a feature set.
func featureBits(f Features) (eax, edx uint32) {
	eax = eaxHypercall
	if f.Has(FeatTime) {
		eax |= eaxTimeRefCount | eaxReferenceTSC
	}
	if f.Has(FeatVPIndex) {
		eax |= eaxVPIndex
	}
	if f.Has(FeatFrequencies) {
		eax |= eaxFrequencies
		edx |= edxFrequencies
	}
	if f.Has(FeatCrash) {
		edx |= edxCrash
	}
	if f.Has(FeatTSCInvariant) {
		eax |= eaxTSCInvariant
	}
	if f.Has(FeatSynIC) {
		eax |= eaxSynIC
	}
	if f.Has(FeatSTimer) {
		eax |= eaxSynTimer
	}
	return eax, edx
}

// Leaves returns CPUID 0x40000000-0x4000000A for the user-space backend:
// the Hyper-V identity, the features of f, no hints (every hint would ask
// for TLB flushes, IPIs or APIC MSRs that only the kernel can do fast),
// and vps virtual processors. They replace KVM's own 0x400000xx leaves:
// no KVM signature may remain, or Linux picks KVM (guest-protocols.md §0).
func Leaves(f Features, vps int) []kvm.CPUIDEntry2 {
	eax, edx := featureBits(f)
	return leaves(eax, edx, versionBuild, versionMajMinor, vps)
}

func leaves(featEAX, featEDX, build, version uint32, vps int) []kvm.CPUIDEntry2 {
	out := []kvm.CPUIDEntry2{
		{Function: LeafVendor, Eax: LeafMax, Ebx: Vendor[0], Ecx: Vendor[1], Edx: Vendor[2]},
		{Function: LeafInterface, Eax: interfaceHv1},
		{Function: LeafVersion, Eax: build, Ebx: version},
		{Function: LeafFeatures, Eax: featEAX, Edx: featEDX},
		{Function: LeafHints, Ebx: spinlockNever},
		{Function: LeafLimits, Eax: uint32(vps)},
	}
	for fn := uint32(LeafHardware); fn <= LeafMax; fn++ {
		out = append(out, kvm.CPUIDEntry2{Function: fn})
	}
	return out
}

// KernelLeaves returns the leaves for the in-kernel backend, from what
// KVM_GET_SUPPORTED_HV_CPUID reported: the same identity and feature
// choice as Leaves, refused when the host lacks a requested feature. Only
// the version is taken over as KVM reports it; KVM's hints stay off for
// the same reason as in Leaves, and its vendor string is replaced.
func KernelLeaves(supported []kvm.CPUIDEntry2, f Features, vps int) ([]kvm.CPUIDEntry2, error) {
	var feat, ver *kvm.CPUIDEntry2
	for i := range supported {
		switch supported[i].Function {
		case LeafFeatures:
			feat = &supported[i]
		case LeafVersion:
			ver = &supported[i]
		}
	}
	if feat == nil {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_HV_CPUID has no leaf %#x", LeafFeatures)
	}
	eax, edx := featureBits(f)
	var missing Features
	for _, n := range featureNames {
		if !f.Has(n.f) {
			continue
		}
		a, d := featureBits(n.f)
		a &^= eaxHypercall
		if feat.Eax&a != a || feat.Edx&d != d {
			missing |= n.f
		}
	}
	if feat.Eax&(eaxHypercall) == 0 {
		return nil, fmt.Errorf("the host's in-kernel Hyper-V has no hypercall MSR (CPUID %#x EAX=%#x)", LeafFeatures, feat.Eax)
	}
	if missing != 0 {
		return nil, fmt.Errorf("the host's in-kernel Hyper-V lacks %s (CPUID %#x EAX=%#x EDX=%#x)", missing, LeafFeatures, feat.Eax, feat.Edx)
	}
	if f.Has(FeatSTimer) && feat.Edx&edxSTimerDirect != 0 {
		// Linux uses stimer0 only in direct mode without VMBus.
		edx |= edxSTimerDirect
	}
	build, version := uint32(versionBuild), uint32(versionMajMinor)
	if ver != nil {
		build, version = ver.Eax, ver.Ebx
	}
	return leaves(eax, edx, build, version, vps), nil
}
