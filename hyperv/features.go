package hyperv

import (
	"errors"
	"fmt"
	"strings"
)

// Features is a set of enlightenments offered to the guest. The hypercall
// MSR and GUEST_OS_ID are always offered: Linux's detection requires the
// first (§2.1 of guest-protocols.md) and identifies itself through the second.
type Features uint32

const (
	// FeatTime is the partition reference counter (TIME_REF_COUNT) and the
	// reference TSC page: CPUID 0x40000003.EAX bits 1 and 9.
	FeatTime Features = 1 << iota
	// FeatVPIndex is the VP_INDEX MSR (EAX bit 6). Linux 6.1 does not
	// detect Hyper-V without it.
	FeatVPIndex
	// FeatCrash is the guest crash MSRs P0-P4 and CRASH_CTL (EDX bit 10).
	FeatCrash
	// FeatFrequencies is the TSC and APIC frequency MSRs (EAX bit 11 and
	// EDX bit 8), which spare the guest its calibration loops.
	FeatFrequencies
	// FeatVPAssist accepts the per-vCPU VP assist page MSR. Linux writes it
	// on every CPU whatever CPUID says, so no CPUID bit goes with it.
	FeatVPAssist
	// FeatTSCInvariant is HV_ACCESS_TSC_INVARIANT (EAX bit 15) and its
	// control MSR 0x40000118. Linux then marks the TSC reliable and rates
	// the TSC page (250) below the plain TSC (300), so it is not in the
	// default set: with it the guest stops using the TSC page clocksource.
	FeatTSCInvariant
	// FeatSynIC is the synthetic interrupt controller (EAX bit 2). Only the
	// in-kernel implementation can back it.
	FeatSynIC
	// FeatSTimer is the synthetic timers (EAX bit 3, EDX bit 19 direct
	// mode when the host has it). In-kernel only; needs synic and time.
	FeatSTimer
)

// DefaultFeatures is what a Linux 6.1 guest uses fully without VMBus: the
// TSC page clocksource, VP index, crash reporting, the frequency MSRs and
// the VP assist page it writes unconditionally.
const DefaultFeatures = FeatTime | FeatVPIndex | FeatCrash | FeatFrequencies | FeatVPAssist

// KernelOnlyFeatures need KVM's in-kernel Hyper-V: their timing and
// interrupt delivery cannot be done from user space.
const KernelOnlyFeatures = FeatSynIC | FeatSTimer

// featureNames is the --hyperv vocabulary, in canonical order.
var featureNames = []struct {
	f    Features
	name string
}{
	{FeatTime, "time"},
	{FeatVPIndex, "vpindex"},
	{FeatCrash, "crash"},
	{FeatFrequencies, "frequencies"},
	{FeatVPAssist, "vp-assist"},
	{FeatTSCInvariant, "tsc-invariant"},
	{FeatSynIC, "synic"},
	{FeatSTimer, "stimer"},
}

// Has reports whether every feature of g is in f.
func (f Features) Has(g Features) bool { return f&g == g }

// String lists the features by name, comma-separated, in canonical order.
func (f Features) String() string {
	var names []string
	for _, n := range featureNames {
		if f.Has(n.f) {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// ParseFeatures reads a --hyperv value: a comma-separated list of
// enlightenment names, where "default" stands for DefaultFeatures and
// "none" for the mandatory plumbing alone. An empty value is the default.
func ParseFeatures(s string) (Features, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultFeatures, nil
	}
	var f Features
	for _, tok := range strings.Split(s, ",") {
		tok = strings.TrimSpace(tok)
		switch tok {
		case "default":
			f |= DefaultFeatures
			continue
		case "none":
			continue
		}
		found := false
		for _, n := range featureNames {
			if n.name == tok {
				f |= n.f
				found = true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("hyperv enlightenment %q: want a comma-separated list of %s, default or none", tok, knownNames())
		}
	}
	return f, nil
}

func knownNames() string {
	names := make([]string, len(featureNames))
	for i, n := range featureNames {
		names[i] = n.name
	}
	return strings.Join(names, ", ")
}

// Backend says which implementation serves the enlightenments.
type Backend string

const (
	// BackendAuto uses the in-kernel implementation when the host has it,
	// else the user-space one.
	BackendAuto Backend = "auto"
	// BackendKernel is KVM's in-kernel Hyper-V (KVM_CAP_HYPERV).
	BackendKernel Backend = "kernel"
	// BackendUser is kvmm's own implementation through user-space MSR exits.
	BackendUser Backend = "user"
)

// ParseBackend reads a --hyperv-backend value; empty means auto.
func ParseBackend(s string) (Backend, error) {
	switch Backend(s) {
	case "", BackendAuto:
		return BackendAuto, nil
	case BackendKernel, BackendUser:
		return Backend(s), nil
	}
	return "", fmt.Errorf("hyperv backend %q: want auto, kernel or user", s)
}

// Validate checks a feature set against a requested backend without asking
// the host: dependencies between features, and features user space cannot
// back. Host capabilities are checked by Choose.
func Validate(f Features, b Backend) error {
	var errs []error
	if f.Has(FeatSTimer) && !f.Has(FeatSynIC) {
		errs = append(errs, errors.New("hyperv enlightenment stimer needs synic (timer messages arrive through the SynIC)"))
	}
	if f.Has(FeatSTimer) && !f.Has(FeatTime) {
		errs = append(errs, errors.New("hyperv enlightenment stimer needs time (timers count in reference time)"))
	}
	if b == BackendUser && f&KernelOnlyFeatures != 0 {
		errs = append(errs, fmt.Errorf("--hyperv %s: synic and stimer need the in-kernel backend, not --hyperv-backend user", f&KernelOnlyFeatures))
	}
	return errors.Join(errs...)
}
