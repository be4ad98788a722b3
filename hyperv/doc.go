// Package hyperv is the Hyper-V personality: the CPUID leaves that make a
// Linux guest detect "Microsoft Hv", the synthetic MSRs it then uses
// (guest OS ID, hypercall page, VP index, reference time and the reference
// TSC page, TSC/APIC frequencies, VP assist page, crash reporting, TSC
// invariant control), and the choice between KVM's in-kernel
// implementation and kvmm's own one in user space.
//
// The reference for every value here is guest-protocols.md §2 (Linux 6.1
// and the Hyper-V TLFS). In the user-space backend KVM forwards the
// synthetic MSRs 0x40000000-0x400001FF through KVM_CAP_X86_USER_SPACE_MSR
// and an MSR filter, and Partition answers them; in the kernel backend KVM
// answers them itself and only the crash MSRs come to Partition, so that a
// crash is reported the same way on both.
//
// Files: features.go (the --hyperv vocabulary), cpuid.go (leaves),
// partition.go (MSR semantics), clock.go (reference time and the TSC page
// arithmetic), crash.go (crash reports), backend.go (backend decision),
// host.go (the KVM calls that carry a decision out), metrics.go.
package hyperv
