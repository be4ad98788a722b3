package hyperv

import (
	"strings"
	"testing"

	"github.com/bobuhiro11/gokvm/kvm"
)

func leafMap(es []kvm.CPUIDEntry2) map[uint32]kvm.CPUIDEntry2 {
	m := map[uint32]kvm.CPUIDEntry2{}
	for _, e := range es {
		m[e.Function] = e
	}
	return m
}

// TestLeavesDefault: guest-protocols.md §2.7, with TSC_INVARIANT left out
// of the default (see FeatTSCInvariant).
func TestLeavesDefault(t *testing.T) {
	es := Leaves(DefaultFeatures, 4)
	m := leafMap(es)
	if len(m) != len(es) || len(es) != int(LeafMax-LeafVendor+1) {
		t.Fatalf("%d leaves (%d distinct), want 0x40000000-0x4000000A", len(es), len(m))
	}
	for _, tc := range []struct {
		leaf               uint32
		eax, ebx, ecx, edx uint32
	}{
		{0x40000000, 0x4000000A, 0x7263694D, 0x666F736F, 0x76482074}, // "Microsoft Hv"
		{0x40000001, 0x31237648, 0, 0, 0},                            // "Hv#1"
		{0x40000002, 0x3839, 0x000A0000, 0, 0},
		{0x40000003, 0x0A62, 0, 0, 0x500}, // bits 1,5,6,9,11; EDX 8,10
		{0x40000004, 0, 0xFFFFFFFF, 0, 0},
		{0x40000005, 4, 0, 0, 0},
		{0x40000006, 0, 0, 0, 0},
		{0x4000000A, 0, 0, 0, 0},
	} {
		e, ok := m[tc.leaf]
		if !ok {
			t.Errorf("no leaf %#x", tc.leaf)
			continue
		}
		if e.Eax != tc.eax || e.Ebx != tc.ebx || e.Ecx != tc.ecx || e.Edx != tc.edx {
			t.Errorf("leaf %#x = %#x %#x %#x %#x, want %#x %#x %#x %#x", tc.leaf, e.Eax, e.Ebx, e.Ecx, e.Edx, tc.eax, tc.ebx, tc.ecx, tc.edx)
		}
	}
	if got := leafMap(Leaves(DefaultFeatures|FeatTSCInvariant, 1))[LeafFeatures].Eax; got != 0x8A62 {
		t.Errorf("with tsc-invariant EAX = %#x, want 0x8A62 (the reference's value)", got)
	}
	if got := leafMap(Leaves(0, 1))[LeafFeatures]; got.Eax != eaxHypercall || got.Edx != 0 {
		t.Errorf("no features: EAX %#x EDX %#x, want the hypercall bit only", got.Eax, got.Edx)
	}
}

// kvmHVLeaves is what KVM 6.x's KVM_GET_SUPPORTED_HV_CPUID reports
// (arch/x86/kvm/hyperv.c, kvm_get_hv_cpuid), abridged.
func kvmHVLeaves() []kvm.CPUIDEntry2 {
	return []kvm.CPUIDEntry2{
		{Function: 0x40000000, Eax: 0x40000082, Ebx: 0x756e694c, Ecx: 0x564b2078, Edx: 0x7648204d}, // "Linux KVM Hv"
		{Function: 0x40000001, Eax: 0x31237648},
		{Function: 0x40000002, Eax: 0x00003839, Ebx: 0x000A0000},
		{Function: 0x40000003, Eax: 0x3FFF, Ebx: 0x100030, Edx: 1<<4 | 1<<8 | 1<<10 | 1<<15 | 1<<19},
		{Function: 0x40000004, Eax: 0x00040E24, Ebx: 0xFFF},
		{Function: 0x40000005, Eax: 1024, Ebx: 64},
		{Function: 0x4000000A, Eax: 0x0201},
		{Function: 0x40000080}, {Function: 0x40000081}, {Function: 0x40000082},
	}
}

func TestKernelLeaves(t *testing.T) {
	f := DefaultFeatures | FeatSynIC | FeatSTimer
	es, err := KernelLeaves(kvmHVLeaves(), f, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := leafMap(es)
	v := m[LeafVendor]
	if v.Eax != LeafMax || v.Ebx != Vendor[0] || v.Ecx != Vendor[1] || v.Edx != Vendor[2] {
		t.Errorf("vendor leaf %+v: want max 0x4000000A and \"Microsoft Hv\", not KVM's", v)
	}
	feat := m[LeafFeatures]
	if feat.Eax != 0x0A62|eaxSynIC|eaxSynTimer || feat.Edx != 0x500|edxSTimerDirect || feat.Ebx != 0 {
		t.Errorf("features %#x %#x %#x", feat.Eax, feat.Ebx, feat.Edx)
	}
	if h := m[LeafHints]; h.Eax != 0 {
		t.Errorf("hints %#x, want none", h.Eax)
	}
	if _, ok := m[0x40000082]; ok {
		t.Error("KVM's syndbg leaves were passed on")
	}
	if m[LeafLimits].Eax != 2 || m[LeafVersion].Eax != 0x3839 {
		t.Errorf("limits %+v version %+v", m[LeafLimits], m[LeafVersion])
	}
}

func TestKernelLeavesRefusesMissing(t *testing.T) {
	old := kvmHVLeaves()
	old[3].Eax &^= eaxReferenceTSC // an old KVM without the TSC page
	old[3].Edx &^= edxCrash
	_, err := KernelLeaves(old, DefaultFeatures, 1)
	if err == nil || !strings.Contains(err.Error(), "lacks time,crash") {
		t.Errorf("error %v, want it to name time and crash", err)
	}
	if _, err := KernelLeaves(old[:2], DefaultFeatures, 1); err == nil {
		t.Error("accepted leaves without 0x40000003")
	}
	if _, err := KernelLeaves(old, FeatVPIndex, 1); err != nil {
		t.Errorf("a feature set the host has: %v", err)
	}
}
