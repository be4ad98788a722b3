package hyperv

import (
	"errors"
	"fmt"

	"github.com/kvmm/kvmm/kvmext"
)

// HostCaps is what the host's KVM offers the Hyper-V personality.
type HostCaps struct {
	UserSpaceMSR bool // KVM_CAP_X86_USER_SPACE_MSR
	MSRFilter    bool // KVM_CAP_X86_MSR_FILTER
	HyperV       bool // KVM_CAP_HYPERV: KVM has its own Hyper-V MSRs and hypercalls
	HVCPUID      bool // KVM_CAP_HYPERV_CPUID: KVM_GET_SUPPORTED_HV_CPUID on a vCPU fd
	SysHVCPUID   bool // KVM_CAP_SYS_HYPERV_CPUID: the same on /dev/kvm
	SynIC2       bool // KVM_CAP_HYPERV_SYNIC2
}

// KernelUsable reports whether the in-kernel implementation can be used:
// KVM has it and says which leaves it supports.
func (c HostCaps) KernelUsable() bool { return c.HyperV && (c.HVCPUID || c.SysHVCPUID) }

// Plan is a resolved backend and the KVM set-up it needs.
type Plan struct {
	Backend  Backend  // BackendKernel or BackendUser
	Features Features // what CPUID offers
	Reason   string   // why this backend, for the log
	// Notes are further facts worth logging (fallbacks taken).
	Notes []string
	// ExitMask is the KVM_CAP_X86_USER_SPACE_MSR mask; 0 enables nothing.
	ExitMask uint64
	// Filter, when non-nil, is installed with KVM_X86_SET_MSR_FILTER on
	// top of a default-allow policy: its ranges deny exactly the MSRs
	// kvmm serves, so those exit to user space and all others stay KVM's.
	Filter []kvmext.MSRFilterRange
	// UserMSRs says a Partition must answer MSR exits: the whole
	// synthetic range (user backend) or only the crash MSRs (kernel).
	UserMSRs bool
}

// Choose resolves the requested backend against the host and plans the
// KVM set-up. auto takes the in-kernel implementation when KVM has it.
func Choose(want Backend, f Features, c HostCaps) (Plan, error) {
	if err := Validate(f, want); err != nil {
		return Plan{}, err
	}
	switch want {
	case BackendKernel:
		if !c.KernelUsable() {
			return Plan{}, fmt.Errorf("--hyperv-backend kernel: this host's KVM has no in-kernel Hyper-V (%s)", c.kernelGap())
		}
		return kernelPlan(f, c, "requested with --hyperv-backend kernel")
	case BackendUser:
		return userPlan(f, c, "requested with --hyperv-backend user")
	case BackendAuto:
		if c.KernelUsable() {
			return kernelPlan(f, c, "auto: the host's KVM has an in-kernel Hyper-V (KVM_CAP_HYPERV, KVM_GET_SUPPORTED_HV_CPUID)")
		}
		if f&KernelOnlyFeatures != 0 {
			return Plan{}, fmt.Errorf("--hyperv %s: synic and stimer need the in-kernel Hyper-V, which this host's KVM lacks (%s)", f&KernelOnlyFeatures, c.kernelGap())
		}
		return userPlan(f, c, "auto: the host's KVM has no in-kernel Hyper-V ("+c.kernelGap()+")")
	}
	return Plan{}, fmt.Errorf("hyperv backend %q is not one of auto, kernel, user", want)
}

func (c HostCaps) kernelGap() string {
	switch {
	case !c.HyperV:
		return "KVM_CAP_HYPERV is 0"
	case !c.HVCPUID && !c.SysHVCPUID:
		return "no KVM_GET_SUPPORTED_HV_CPUID"
	}
	return "it has both KVM_CAP_HYPERV and KVM_GET_SUPPORTED_HV_CPUID"
}

// syntheticFilter denies every synthetic MSR to KVM: they all exit.
func syntheticFilter() []kvmext.MSRFilterRange {
	return []kvmext.MSRFilterRange{{
		Flags: kvmext.MSRFilterRead | kvmext.MSRFilterWrite,
		Base:  SyntheticMSRBase, NMSRs: SyntheticMSRCount,
		Bitmap: make([]byte, kvmext.MSRFilterBitmapBytes(SyntheticMSRCount)), // all clear: deny
	}}
}

// crashFilter denies only CRASH_P0-P4 and CRASH_CTL to KVM.
func crashFilter() []kvmext.MSRFilterRange {
	n := uint32(MSRCrashCtl - MSRCrashP0 + 1)
	return []kvmext.MSRFilterRange{{
		Flags: kvmext.MSRFilterRead | kvmext.MSRFilterWrite,
		Base:  MSRCrashP0, NMSRs: n,
		Bitmap: make([]byte, kvmext.MSRFilterBitmapBytes(n)),
	}}
}

func userPlan(f Features, c HostCaps, reason string) (Plan, error) {
	if !c.UserSpaceMSR {
		return Plan{}, errors.New("the user-space Hyper-V backend needs KVM_CAP_X86_USER_SPACE_MSR, which this host's KVM lacks")
	}
	p := Plan{Backend: BackendUser, Features: f, Reason: reason, UserMSRs: true}
	if c.MSRFilter {
		// FILTER: the denied synthetic range. INVAL and UNKNOWN are asked
		// for too, so that nothing in the range can ever be answered by
		// KVM; kvmm answers #GP, as KVM would, for any other MSR that
		// arrives that way.
		p.ExitMask = kvmext.MSRExitReasonInval | kvmext.MSRExitReasonUnknown | kvmext.MSRExitReasonFilter
		p.Filter = syntheticFilter()
		return p, nil
	}
	if c.HyperV {
		// KVM knows the synthetic MSRs itself: without a filter they
		// would never reach user space.
		return Plan{}, errors.New("the user-space Hyper-V backend needs KVM_CAP_X86_MSR_FILTER on a host with an in-kernel Hyper-V; use --hyperv-backend kernel")
	}
	p.ExitMask = kvmext.MSRExitReasonInval | kvmext.MSRExitReasonUnknown
	p.Notes = append(p.Notes, "host KVM lacks KVM_CAP_X86_MSR_FILTER: the synthetic MSRs reach kvmm as unknown-MSR exits")
	return p, nil
}

func kernelPlan(f Features, c HostCaps, reason string) (Plan, error) {
	if f.Has(FeatSynIC) && !c.SynIC2 {
		return Plan{}, errors.New("hyperv enlightenment synic needs KVM_CAP_HYPERV_SYNIC2, which this host's KVM lacks")
	}
	p := Plan{Backend: BackendKernel, Features: f, Reason: reason}
	if !f.Has(FeatCrash) {
		return p, nil
	}
	if c.UserSpaceMSR && c.MSRFilter {
		// KVM's own crash MSRs end the vCPU with a "system crash" event
		// that carries no parameters, and never offer the message page
		// (KVM keeps only CRASH_CTL bit 63). Filtering the six crash
		// MSRs to user space reports crashes the same way on both
		// backends, message included.
		p.ExitMask = kvmext.MSRExitReasonFilter
		p.Filter = crashFilter()
		p.UserMSRs = true
		return p, nil
	}
	p.Notes = append(p.Notes, "host KVM lacks user-space MSR exits or the MSR filter: guest crashes end the VM as KVM system crash events, without the crash parameters")
	return p, nil
}
