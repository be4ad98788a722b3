package vmm

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/bobuhiro11/gokvm/kvm"

	"github.com/kvmm/kvmm/hyperv"
	"github.com/kvmm/kvmm/kvmext"
	"github.com/kvmm/kvmm/vcpu"
)

// The Hyper-V personality's wiring: backend choice, CPUID leaves, KVM MSR
// exits and filter, the partition that answers the synthetic MSRs, crash
// reports as VM events, and the reference clock across pause and resume.
// The semantics are in package hyperv.

// msrIA32TSC is the time-stamp counter MSR; KVM_GET_MSRS on it gives a
// vCPU's TSC as the guest reads it.
const msrIA32TSC = 0x10

// hypervState is a machine's Hyper-V personality.
type hypervState struct {
	// part answers the MSR exits: every synthetic MSR (user backend) or
	// only the crash MSRs (kernel backend); nil when none come to kvmm.
	part *hyperv.Partition
	log  *slog.Logger
}

// validateHyperV checks the Hyper-V options of a config without asking
// the host (Config.Validate).
func validateHyperV(c *Config) error {
	feats, ferr := hyperv.ParseFeatures(c.HyperV)
	backend, berr := hyperv.ParseBackend(c.HyperVBackend)
	if err := errors.Join(ferr, berr); err != nil {
		return err
	}
	if c.Personality != string(vcpu.PersonalityHyperV) {
		if c.HyperV != "" || backend != hyperv.BackendAuto {
			return fmt.Errorf("hyperv options (%q, backend %q) need personality hyperv, not %q", c.HyperV, c.HyperVBackend, c.Personality)
		}
		return nil
	}
	return hyperv.Validate(feats, backend)
}

// setupHyperV gives a machine whose vCPUs exist the Hyper-V personality
// (no-op for others): it chooses the backend and logs the choice, adds the
// Hyper-V leaves to every vCPU's CPUID (ComposeCPUID already dropped KVM's
// and exposed the invariant TSC), and routes the synthetic MSRs to a
// partition. Host capabilities that cannot back the configuration are
// errors here, before the VM runs.
func (m *machine) setupHyperV(vm *VM) error {
	if m.cfg.Personality != string(vcpu.PersonalityHyperV) {
		return nil
	}
	feats, err := hyperv.ParseFeatures(m.cfg.HyperV)
	if err != nil {
		return err
	}
	want, err := hyperv.ParseBackend(m.cfg.HyperVBackend)
	if err != nil {
		return err
	}
	caps := hyperv.ProbeHost(m.kvmFd)
	plan, err := hyperv.Choose(want, feats, caps)
	if err != nil {
		return fmt.Errorf("hyperv personality: %w", err)
	}
	log := m.log.With("dev", "hyperv")
	log.Info("Hyper-V personality", "backend", string(plan.Backend), "why", plan.Reason,
		"enlightenments", feats.String(), "msr_filter", plan.Filter != nil)
	for _, n := range plan.Notes {
		log.Warn(n)
	}

	leaves := hyperv.Leaves(feats, len(m.vcpus))
	if plan.Backend == hyperv.BackendKernel {
		supported, err := hyperv.SupportedHVCPUID(caps, m.kvmFd, m.vcpus[0].FD())
		if err != nil {
			return fmt.Errorf("hyperv personality: %w", err)
		}
		if leaves, err = hyperv.KernelLeaves(supported, feats, len(m.vcpus)); err != nil {
			return fmt.Errorf("hyperv personality: %w", err)
		}
	}
	for _, v := range m.vcpus {
		// KVM_SET_CPUID2 may be repeated until the vCPU first runs.
		cur := &kvm.CPUID{Nent: 256, Entries: make([]kvm.CPUIDEntry2, 256)}
		if err := kvm.GetCPUID2(v.FD(), cur); err != nil {
			return fmt.Errorf("hyperv personality: vcpu %d: KVM_GET_CPUID2: %w", v.ID, err)
		}
		if err := v.SetCPUID(vcpu.MergeCPUID(cur.Entries[:cur.Nent], leaves)); err != nil {
			return fmt.Errorf("hyperv personality: %w", err)
		}
		if err := plan.SetupVCPU(v.FD(), v.ID); err != nil {
			return fmt.Errorf("hyperv personality: %w", err)
		}
	}
	if err := plan.SetupVM(m.vmFd); err != nil {
		return fmt.Errorf("hyperv personality: %w", err)
	}

	hs := &hypervState{log: log}
	if plan.UserMSRs {
		pc := hyperv.Config{Features: feats, Backend: plan.Backend, VPs: len(m.vcpus),
			GuestTSC: m.guestTSC, Memory: m.mem, Logger: log,
			OnCrash: func(r hyperv.CrashReport) { m.hypervCrashed(vm, log, r) }}
		if plan.Backend == hyperv.BackendUser && (feats.Has(hyperv.FeatTime) || feats.Has(hyperv.FeatFrequencies)) {
			khz, err := kvm.GetTSCKHz(m.vcpus[0].FD())
			if err != nil || khz == 0 {
				return fmt.Errorf("hyperv personality: KVM_GET_TSC_KHZ gave %d kHz (%v): the time and frequencies enlightenments need the guest TSC frequency", khz, err)
			}
			pc.TSCHz = khz * 1000
		}
		if hs.part, err = hyperv.NewPartition(pc); err != nil {
			return err
		}
		log.Info("Hyper-V synthetic MSRs served by kvmm", "tsc_hz", pc.TSCHz, "exit_mask", fmt.Sprintf("%#x", plan.ExitMask))
	}
	m.hv = hs
	return nil
}

// guestTSC reads vCPU vp's TSC as the guest sees it (KVM_GET_MSRS).
func (m *machine) guestTSC(vp int) (uint64, error) {
	if vp < 0 || vp >= len(m.vcpus) {
		return 0, fmt.Errorf("no vcpu %d", vp)
	}
	return kvmext.GetMSR(m.vcpus[vp].FD(), msrIA32TSC)
}

// readMSR and writeMSR serve the MSR exits (machine.ReadMSR/WriteMSR).
// Without a partition, or for an MSR it does not serve (an INVAL or
// UNKNOWN exit of an MSR outside the synthetic range), the answer is #GP,
// which is what KVM itself would have done.
func (h *hypervState) readMSR(v *vcpu.VCPU, index uint32) (uint64, bool) {
	if h == nil || h.part == nil {
		return 0, false
	}
	return h.part.ReadMSR(v.ID, index)
}

func (h *hypervState) writeMSR(v *vcpu.VCPU, index uint32, value uint64) bool {
	if h == nil || h.part == nil {
		return false
	}
	return h.part.WriteMSR(v.ID, index, value)
}

// hypervPause stops the partition reference time; every vCPU is parked.
func (m *machine) hypervPause() {
	if m.hv == nil || m.hv.part == nil || m.hv.part.Clock() == nil {
		return
	}
	tsc, err := m.guestTSC(0)
	if err != nil {
		m.hv.log.Warn("reference time keeps running across the pause", "err", err)
		return
	}
	m.hv.part.Pause(tsc)
}

// hypervResume restarts the reference time where hypervPause stopped it
// and rewrites the TSC page; no vCPU runs yet. Without a preceding pause
// (an S3 wake) it does nothing.
func (m *machine) hypervResume() {
	if m.hv == nil || m.hv.part == nil || m.hv.part.Clock() == nil {
		return
	}
	tsc, err := m.guestTSC(0)
	if err == nil {
		err = m.hv.part.Resume(tsc)
	}
	if err != nil {
		m.hv.log.Warn("resuming the reference time", "err", err)
	}
}

// hypervCrashed reports a guest crash: the crash parameters and message in
// the log, a guest-crashed event, and the end of the VM with
// StatusGuestCrashed. It runs on the vCPU thread that wrote CRASH_CTL.
func (m *machine) hypervCrashed(vm *VM, log *slog.Logger, r hyperv.CrashReport) {
	args := []any{"vcpu", r.VP,
		"p0", fmt.Sprintf("%#x", r.P[0]), "p1", fmt.Sprintf("%#x", r.P[1]), "p2", fmt.Sprintf("%#x", r.P[2]),
		"p3", fmt.Sprintf("%#x", r.P[3]), "p4", fmt.Sprintf("%#x", r.P[4])}
	if r.Ctl&hyperv.CrashNotifyMsg != 0 {
		args = append(args, "message", r.Message, "truncated", r.Truncated)
		if r.MessageError != "" {
			args = append(args, "message_error", r.MessageError)
		}
	}
	log.Error("guest crashed (Hyper-V crash MSRs)", args...)
	detail := r.String()
	vm.events.publish(Event{Type: "guest-crashed", Detail: detail})
	m.post(event{result: &Result{Status: StatusGuestCrashed, Reason: "guest crashed: " + detail}})
}
