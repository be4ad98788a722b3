package hyperv

import (
	"strings"
	"testing"

	"github.com/kvmm/kvmm/kvmext"
)

var (
	// thisHost is this workplace's KVM: user-space MSR exits and the MSR
	// filter, no in-kernel Hyper-V.
	thisHost = HostCaps{UserSpaceMSR: true, MSRFilter: true}
	// hvHost is a stock x86 KVM built with CONFIG_KVM_HYPERV (5.11+).
	hvHost = HostCaps{UserSpaceMSR: true, MSRFilter: true, HyperV: true, HVCPUID: true, SysHVCPUID: true, SynIC2: true}
	// oldHVHost has the in-kernel Hyper-V but predates the MSR filter and
	// the system-wide HV CPUID ioctl (5.3-5.9).
	oldHVHost = HostCaps{HyperV: true, HVCPUID: true, SynIC2: true}
	// noHVNoFilter has user-space MSR exits but no filter, no Hyper-V.
	noHVNoFilter = HostCaps{UserSpaceMSR: true}
)

func TestChoose(t *testing.T) {
	allMask := uint64(kvmext.MSRExitReasonInval | kvmext.MSRExitReasonUnknown | kvmext.MSRExitReasonFilter)
	for _, tc := range []struct {
		name       string
		want       Backend
		f          Features
		caps       HostCaps
		backend    Backend
		mask       uint64
		filterBase uint32 // 0: no filter
		filterN    uint32
		userMSRs   bool
		err        string
	}{
		{"auto here: user, filter", BackendAuto, DefaultFeatures, thisHost, BackendUser, allMask, SyntheticMSRBase, SyntheticMSRCount, true, ""},
		{"user here", BackendUser, DefaultFeatures, thisHost, BackendUser, allMask, SyntheticMSRBase, SyntheticMSRCount, true, ""},
		{"kernel here: refused", BackendKernel, DefaultFeatures, thisHost, "", 0, 0, 0, false, "--hyperv-backend kernel: this host's KVM has no in-kernel Hyper-V (KVM_CAP_HYPERV is 0)"},
		{"auto here with stimer: refused", BackendAuto, DefaultFeatures | FeatSynIC | FeatSTimer, thisHost, "", 0, 0, 0, false, "need the in-kernel Hyper-V"},
		{"user with synic: refused", BackendUser, FeatSynIC, hvHost, "", 0, 0, 0, false, "need the in-kernel backend"},
		{"auto with in-kernel: kernel, crash MSRs filtered", BackendAuto, DefaultFeatures, hvHost, BackendKernel, kvmext.MSRExitReasonFilter, MSRCrashP0, 6, true, ""},
		{"kernel without crash: no exits", BackendKernel, FeatTime | FeatVPIndex, hvHost, BackendKernel, 0, 0, 0, false, ""},
		{"kernel with stimer", BackendKernel, DefaultFeatures | FeatSynIC | FeatSTimer, hvHost, BackendKernel, kvmext.MSRExitReasonFilter, MSRCrashP0, 6, true, ""},
		{"user on an in-kernel host: filter takes the MSRs", BackendUser, DefaultFeatures, hvHost, BackendUser, allMask, SyntheticMSRBase, SyntheticMSRCount, true, ""},
		{"old in-kernel host: kernel, KVM's crash events", BackendAuto, DefaultFeatures, oldHVHost, BackendKernel, 0, 0, 0, false, ""},
		{"user on an old in-kernel host: refused", BackendUser, DefaultFeatures, oldHVHost, "", 0, 0, 0, false, "KVM_CAP_X86_USER_SPACE_MSR"},
		{"no filter, no Hyper-V: unknown-MSR exits", BackendAuto, DefaultFeatures, noHVNoFilter, BackendUser, kvmext.MSRExitReasonInval | kvmext.MSRExitReasonUnknown, 0, 0, true, ""},
		{"in-kernel without the HV CPUID ioctl: user", BackendAuto, DefaultFeatures, HostCaps{UserSpaceMSR: true, MSRFilter: true, HyperV: true}, BackendUser, allMask, SyntheticMSRBase, SyntheticMSRCount, true, ""},
		{"synic without SYNIC2", BackendKernel, DefaultFeatures | FeatSynIC, HostCaps{HyperV: true, SysHVCPUID: true}, "", 0, 0, 0, false, "KVM_CAP_HYPERV_SYNIC2"},
		{"nothing at all", BackendAuto, DefaultFeatures, HostCaps{}, "", 0, 0, 0, false, "KVM_CAP_X86_USER_SPACE_MSR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Choose(tc.want, tc.f, tc.caps)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Backend != tc.backend || p.ExitMask != tc.mask || p.UserMSRs != tc.userMSRs || p.Features != tc.f || p.Reason == "" {
				t.Errorf("plan %+v", p)
			}
			if tc.filterBase == 0 {
				if p.Filter != nil {
					t.Errorf("filter %+v, want none", p.Filter)
				}
				return
			}
			if len(p.Filter) != 1 {
				t.Fatalf("filter %+v", p.Filter)
			}
			r := p.Filter[0]
			if r.Base != tc.filterBase || r.NMSRs != tc.filterN || r.Flags != kvmext.MSRFilterRead|kvmext.MSRFilterWrite ||
				len(r.Bitmap) != kvmext.MSRFilterBitmapBytes(r.NMSRs) {
				t.Errorf("filter range %+v", r)
			}
			for _, b := range r.Bitmap {
				if b != 0 {
					t.Errorf("bitmap allows something: % x", r.Bitmap)
					break
				}
			}
		})
	}
}

// TestChooseNotesFallback: the unknown-MSR fallback is logged.
func TestChooseNotesFallback(t *testing.T) {
	p, err := Choose(BackendAuto, DefaultFeatures, noHVNoFilter)
	if err != nil || len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "KVM_CAP_X86_MSR_FILTER") {
		t.Errorf("plan %+v, %v", p, err)
	}
	p, err = Choose(BackendAuto, DefaultFeatures, oldHVHost)
	if err != nil || len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "system crash") {
		t.Errorf("plan %+v, %v", p, err)
	}
}
