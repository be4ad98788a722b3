package vcpu

import (
	"fmt"

	"github.com/bobuhiro11/gokvm/kvm"
)

// Model selects the CPU features a guest sees.
type Model string

const (
	// ModelHost passes through everything KVM supports on this host.
	ModelHost Model = "host"
	// ModelBaseline is a conservative x86-64-v2 feature set, for guests
	// that must move between hosts.
	ModelBaseline Model = "baseline"
)

// ParseModel checks a --cpu value.
func ParseModel(s string) (Model, error) {
	switch Model(s) {
	case ModelHost, ModelBaseline:
		return Model(s), nil
	}
	return "", fmt.Errorf("cpu model %q: want host or baseline", s)
}

// Personality is the hypervisor a guest detects through CPUID 0x40000000+
// (see guest-protocols.md section 0): exactly one per VM, because a KVM
// signature next to another makes Linux ignore the other.
type Personality string

const (
	// PersonalityKVM exposes the KVM signature and paravirt features.
	PersonalityKVM Personality = "kvm"
	// PersonalityHyperV drops KVM's 0x400000xx leaves (the caller passes
	// the Hyper-V ones to ComposeCPUID, see package hyperv) and exposes
	// the invariant TSC.
	PersonalityHyperV Personality = "hyperv"
	// PersonalityVMware drops KVM's 0x400000xx leaves for VMware's
	// (VMwareLeaves) and exposes the invariant TSC; package balloon serves
	// the VMware backdoor and balloon ports.
	PersonalityVMware Personality = "vmware"
)

// ParsePersonality checks a --personality value.
func ParsePersonality(s string) (Personality, error) {
	switch Personality(s) {
	case PersonalityKVM, PersonalityHyperV, PersonalityVMware:
		return Personality(s), nil
	}
	return "", fmt.Errorf("personality %q: want kvm, hyperv or vmware", s)
}

// CPUID leaves and bits kvmm edits.
const (
	leafFeatures    = 0x1
	leafExtTopology = 0xB
	leafV2Topology  = 0x1F
	leafExtFeatures = 0x7
	leafHypervisor  = 0x40000000
	leafKVMFeatures = 0x40000001
	leafExtInfo     = 0x80000001

	ecxHypervisor = 1 << 31
	edxHTT        = 1 << 28
)

// Baseline masks: x86-64-v2 (SSE3, SSSE3, SSE4.1/4.2, POPCNT, CX16, LAHF)
// on top of the x86-64 base set.
const (
	baselineLeaf1ECX = 1<<0 | 1<<9 | 1<<13 | 1<<19 | 1<<20 | 1<<23 | ecxHypervisor
	baselineLeaf1EDX = 0x1 | 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<5 | 1<<6 | 1<<7 | 1<<8 | 1<<9 |
		1<<11 | 1<<12 | 1<<13 | 1<<14 | 1<<15 | 1<<16 | 1<<17 | 1<<19 | 1<<23 | 1<<24 | 1<<25 | 1<<26 | edxHTT
	baselineExtECX = 1 << 0                        // LAHF/SAHF in long mode
	baselineExtEDX = 1<<11 | 1<<20 | 1<<29 | 1<<27 // SYSCALL, NX, LM, RDTSCP
)

// kvmSignature is "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
var kvmSignature = [3]uint32{0x4b4d564b, 0x564b4d56, 0x0000004d}

// ComposeCPUID derives one vCPU's CPUID table from what KVM supports: the
// APIC ID and topology for vCPU id of n, the hypervisor bit and signature of
// the personality, and the feature mask of the model. Personalities other
// than kvm get none of KVM's 0x4xxxxxxx leaves, and the invariant TSC; the
// caller passes their own leaves (e.g. hyperv.Leaves) as extra, which
// replace or add entries (MergeCPUID).
func ComposeCPUID(supported []kvm.CPUIDEntry2, id, n int, model Model, p Personality, extra ...kvm.CPUIDEntry2) []kvm.CPUIDEntry2 {
	out := make([]kvm.CPUIDEntry2, 0, len(supported)+2)
	sawSig := false
	for _, e := range supported {
		if p != PersonalityKVM && isHypervisorLeaf(e.Function) {
			continue
		}
		switch e.Function {
		case leafFeatures:
			e.Ebx = e.Ebx&0x0000FFFF | uint32(id)<<24 | uint32(min(n, 255))<<16
			e.Ecx |= ecxHypervisor
			if n > 1 {
				e.Edx |= edxHTT
			}
			if model == ModelBaseline {
				e.Ecx &= baselineLeaf1ECX
				e.Edx &= baselineLeaf1EDX
			}
		case leafExtTopology, leafV2Topology:
			e.Edx = uint32(id)
		case leafExtFeatures:
			if model == ModelBaseline {
				e.Ebx, e.Ecx, e.Edx = 0, 0, 0
			}
		case leafExtInfo:
			if model == ModelBaseline {
				e.Ecx &= baselineExtECX
				e.Edx &= baselineExtEDX
			}
		case leafHypervisor:
			sawSig = true
			e.Eax = leafKVMFeatures
			e.Ebx, e.Ecx, e.Edx = kvmSignature[0], kvmSignature[1], kvmSignature[2]
		}
		out = append(out, e)
	}
	if !sawSig && p == PersonalityKVM {
		out = append(out, kvm.CPUIDEntry2{Function: leafHypervisor, Eax: leafKVMFeatures,
			Ebx: kvmSignature[0], Ecx: kvmSignature[1], Edx: kvmSignature[2]})
	}
	if p != PersonalityKVM {
		out = withInvariantTSC(out)
	}
	return MergeCPUID(out, extra)
}

// --- Personalities other than kvm (hyperv; see guest-protocols.md §0) ---

const (
	leafExtMax       = 0x80000000
	leafAPM          = 0x80000007 // advanced power management
	edxInvariantTSC  = 1 << 8     // 0x80000007 EDX: the TSC runs at a constant rate
	leafHypervisorHi = 0x4FFFFFFF
)

// isHypervisorLeaf reports whether fn is in the range hypervisors use for
// their signatures and features; Linux scans it for "KVMKVMKVM" (§0).
func isHypervisorLeaf(fn uint32) bool { return fn >= leafHypervisor && fn <= leafHypervisorHi }

// withInvariantTSC sets CPUID 0x80000007 EDX[8], adding the leaf (and
// raising the maximum extended leaf) when KVM did not report it. Without
// kvmclock the guest's clock is the TSC (directly or through a TSC page),
// and Linux only trusts a TSC it is told is invariant.
func withInvariantTSC(entries []kvm.CPUIDEntry2) []kvm.CPUIDEntry2 {
	found := false
	for i := range entries {
		switch entries[i].Function {
		case leafAPM:
			entries[i].Edx |= edxInvariantTSC
			found = true
		case leafExtMax:
			entries[i].Eax = max(entries[i].Eax, leafAPM)
		}
	}
	if !found {
		entries = append(entries, kvm.CPUIDEntry2{Function: leafAPM, Edx: edxInvariantTSC})
	}
	return entries
}

// MergeCPUID returns base with every entry of extra in place of the base
// entry with the same function and index, or appended when there is none.
func MergeCPUID(base, extra []kvm.CPUIDEntry2) []kvm.CPUIDEntry2 {
	out := append([]kvm.CPUIDEntry2(nil), base...)
	for _, e := range extra {
		replaced := false
		for i := range out {
			if out[i].Function == e.Function && out[i].Index == e.Index {
				out[i], replaced = e, true
				break
			}
		}
		if !replaced {
			out = append(out, e)
		}
	}
	return out
}

// --- The VMware personality (guest-protocols.md §1.1) ---

const (
	// leafVMwareTiming is the leaf QEMU's vmware-cpuid-freq adds: EAX = TSC
	// kHz, EBX = APIC bus kHz, ECX = EDX = 0.
	leafVMwareTiming = 0x40000010
	// KVMAPICBusKHz is the frequency of KVM's in-kernel local APIC timer
	// (its APIC bus): 1 GHz.
	KVMAPICBusKHz = 1000000
)

// vmwareSignature is "VMwareVMware" as EBX, ECX, EDX.
var vmwareSignature = [3]uint32{0x61774D56, 0x4D566572, 0x65726177}

// VMwareLeaves returns the VMware personality's hypervisor leaves, to merge
// over a table ComposeCPUID made for PersonalityVMware: 0x40000000 with the
// signature and the maximum leaf, and the timing leaf 0x40000010.
//
// ECX of 0x40000010 stays 0. Its bits 0 and 1 would make Linux call the
// backdoor with VMMCALL or VMCALL, which stock KVM handles in the kernel as
// its own hypercalls (the VMware magic is unknown there: -KVM_ENOSYS),
// never reaching kvmm; with both clear Linux uses the I/O port, which
// exits to kvmm.
func VMwareLeaves(tscKHz, apicBusKHz uint32) []kvm.CPUIDEntry2 {
	return []kvm.CPUIDEntry2{
		{Function: leafHypervisor, Eax: leafVMwareTiming,
			Ebx: vmwareSignature[0], Ecx: vmwareSignature[1], Edx: vmwareSignature[2]},
		{Function: leafVMwareTiming, Eax: tscKHz, Ebx: apicBusKHz},
	}
}
