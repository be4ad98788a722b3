package hyperv

import (
	"errors"
	"fmt"

	"github.com/bobuhiro11/gokvm/kvm"

	"github.com/kvmm/kvmm/kvmext"
)

// The KVM side of a Plan: host probing and the VM and vCPU set-up. The
// decisions are in backend.go; this file only carries them out.

// ProbeHost asks KVM (the /dev/kvm fd) for the capabilities Choose needs.
// A capability KVM does not know reads as absent.
func ProbeHost(kvmFd uintptr) HostCaps {
	has := func(c uint32) bool {
		n, err := kvmext.CheckExtension(kvmFd, c)
		return err == nil && n > 0
	}
	return HostCaps{
		UserSpaceMSR: has(kvmext.CapX86UserSpaceMSR),
		MSRFilter:    has(kvmext.CapX86MSRFilter),
		HyperV:       has(kvmext.CapHyperV),
		HVCPUID:      has(kvmext.CapHyperVCPUID),
		SysHVCPUID:   has(kvmext.CapSysHyperVCPUID),
		SynIC2:       has(kvmext.CapHyperVSynIC2),
	}
}

// SetupVM makes KVM hand the plan's MSRs to user space: the exit reasons
// first, then the filter.
func (p Plan) SetupVM(vmFd uintptr) error {
	if p.ExitMask != 0 {
		if err := kvmext.EnableUserSpaceMSR(vmFd, p.ExitMask); err != nil {
			return err
		}
	}
	if p.Filter != nil {
		// Default allow: every MSR outside the ranges stays KVM's.
		if err := kvmext.SetMSRFilter(vmFd, 0, p.Filter); err != nil {
			return err
		}
	}
	return nil
}

// SupportedHVCPUID reads the in-kernel leaves: from /dev/kvm when KVM
// offers the system ioctl, else from a vCPU.
func SupportedHVCPUID(c HostCaps, kvmFd, vcpuFd uintptr) ([]kvm.CPUIDEntry2, error) {
	switch {
	case c.SysHVCPUID:
		return kvmext.GetSupportedHVCPUID(kvmFd)
	case c.HVCPUID:
		return kvmext.GetSupportedHVCPUID(vcpuFd)
	}
	return nil, errors.New("this host's KVM cannot report its Hyper-V CPUID leaves")
}

// SetupVCPU does the per-vCPU part of the in-kernel backend, after the
// vCPU's CPUID (with "Hv#1" at 0x40000001, which turns KVM's Hyper-V on
// for it) is set: SynIC activation, and VP_INDEX = the vCPU ID, set
// explicitly as QEMU does rather than relying on KVM's creation order.
// KVM_CAP_HYPERV_ENFORCE_CPUID stays off, as in QEMU's default: Linux
// writes the VP assist page whatever CPUID offers, and enforcement would
// turn that write into a #GP (and a WARN). The user backend needs nothing
// per vCPU.
func (p Plan) SetupVCPU(vcpuFd uintptr, id int) error {
	if p.Backend != BackendKernel {
		return nil
	}
	if p.Features.Has(FeatSynIC) {
		// SYNIC2 (not SYNIC): KVM then leaves the message and event pages
		// alone on activation instead of zeroing guest memory.
		if err := kvmext.EnableCap(vcpuFd, kvmext.CapHyperVSynIC2); err != nil {
			return fmt.Errorf("vcpu %d: %w", id, err)
		}
	}
	if p.Features.Has(FeatVPIndex) {
		if err := kvmext.SetMSR(vcpuFd, MSRVPIndex, uint64(id)); err != nil {
			return fmt.Errorf("vcpu %d: VP_INDEX: %w", id, err)
		}
	}
	return nil
}
