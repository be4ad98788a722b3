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
)

// ParsePersonality checks a --personality value.
func ParsePersonality(s string) (Personality, error) {
	switch Personality(s) {
	case PersonalityKVM:
		return Personality(s), nil
	}
	return "", fmt.Errorf("personality %q: want kvm (hyperv and vmware are not built yet)", s)
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
// the personality, and the feature mask of the model.
func ComposeCPUID(supported []kvm.CPUIDEntry2, id, n int, model Model, p Personality) []kvm.CPUIDEntry2 {
	out := make([]kvm.CPUIDEntry2, 0, len(supported)+2)
	sawSig := false
	for _, e := range supported {
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
	return out
}
