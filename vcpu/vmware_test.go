package vcpu

import (
	"testing"

	"github.com/bobuhiro11/gokvm/kvm"
)

// TestVMwareCPUID: the table a VMware-personality vCPU gets (ComposeCPUID
// for PersonalityVMware, then VMwareLeaves merged over it) is what Linux's
// vmware_platform wants and nothing that makes kvm_cpuid_base win
// (guest-protocols.md §0, §1.1). No KVM needed: the input imitates
// KVM_GET_SUPPORTED_CPUID, KVM's own hypervisor leaves included.
func TestVMwareCPUID(t *testing.T) {
	supported := []kvm.CPUIDEntry2{
		{Function: 0, Eax: 0xd},
		{Function: 1, Ecx: 1 << 21}, // x2APIC
		{Function: 0x40000000, Eax: 0x40000001, Ebx: kvmSignature[0], Ecx: kvmSignature[1], Edx: kvmSignature[2]},
		{Function: 0x40000001, Eax: 0x01007afb},
		{Function: 0x40000100, Ebx: kvmSignature[0], Ecx: kvmSignature[1], Edx: kvmSignature[2]},
		{Function: 0x80000000, Eax: 0x80000001},
	}
	p, err := ParsePersonality("vmware")
	if err != nil || p != PersonalityVMware {
		t.Fatalf("ParsePersonality(vmware) = %q, %v", p, err)
	}
	table := MergeCPUID(ComposeCPUID(supported, 0, 1, ModelHost, p), VMwareLeaves(2100000, KVMAPICBusKHz))
	get := func(fn uint32) (kvm.CPUIDEntry2, bool) {
		for _, e := range table {
			if e.Function == fn {
				return e, true
			}
		}
		return kvm.CPUIDEntry2{}, false
	}
	if e, _ := get(1); e.Ecx&ecxHypervisor == 0 {
		t.Error("CPUID.1:ECX[31] (hypervisor) clear")
	}
	sig, ok := get(0x40000000)
	if !ok || sig.Eax != 0x40000010 || sig.Ebx != 0x61774D56 || sig.Ecx != 0x4D566572 || sig.Edx != 0x65726177 {
		t.Errorf("0x40000000 = %+v, want max leaf 0x40000010 and VMwareVMware", sig)
	}
	timing, ok := get(0x40000010)
	if !ok || timing.Eax != 2100000 || timing.Ebx != 1000000 || timing.Ecx != 0 || timing.Edx != 0 {
		t.Errorf("0x40000010 = %+v, want TSC kHz, APIC bus kHz, ECX = EDX = 0 (I/O-port backdoor)", timing)
	}
	for _, e := range table {
		if e.Ebx == kvmSignature[0] && e.Ecx == kvmSignature[1] {
			t.Errorf("KVM signature at %#x", e.Function)
		}
		if e.Function == 0x40000001 || e.Function == 0x40000100 {
			t.Errorf("KVM leaf %#x kept", e.Function)
		}
	}
	if e, ok := get(leafAPM); !ok || e.Edx&edxInvariantTSC == 0 {
		t.Errorf("no invariant TSC: %+v", e)
	}
	if e, _ := get(leafExtMax); e.Eax < leafAPM {
		t.Errorf("max extended leaf %#x below 0x80000007", e.Eax)
	}
	if _, err := ParsePersonality("vmwre"); err == nil {
		t.Error("a misspelt personality is accepted")
	}
}
