package vmm

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/bobuhiro11/gokvm/kvm"

	"github.com/kvmm/kvmm/acpi"
	"github.com/kvmm/kvmm/kvmext"
)

// ACPI S3 (suspend to RAM) without firmware. kvmm does on wake what
// firmware (SeaBIOS's s3_resume) does: the boot vCPU restarts in real mode
// at the FACS firmware waking vector, the other vCPUs wait for INIT/SIPI,
// the interrupt controllers come back masked as after a platform reset, and
// PM1_STS carries WAK_STS plus the reason. RAM is untouched, so the guest's
// own resume path (Linux's wakeup_asm.S) carries on from there.

// facsWakingVector is the offset of firmware_waking_vector in the FACS.
const facsWakingVector = 12

// guestSuspend is the PM block's S3 hook. It runs on the vCPU thread that
// wrote SLP_EN: it parks every vCPU (that one included, before it re-enters
// KVM_RUN) and marks the VM suspended. It must not wait for the vCPUs: it is
// one of them.
func (vm *VM) guestSuspend(m *machine) {
	for _, v := range m.vcpus {
		v.RequestPause()
	}
	vm.mu.Lock()
	if vm.m != m || vm.state != StateRunning {
		vm.mu.Unlock()
		return
	}
	vm.state = StateSuspended
	vm.suspendedAt = time.Now()
	vm.suspends++
	gen := vm.suspends
	vm.mu.Unlock()
	vm.log.Info("guest entered ACPI S3 (suspend to RAM)")
	vm.events.publish(Event{Type: "state", State: StateSuspended, Detail: "guest entered ACPI S3"})
	if d := time.Duration(vm.cfg.WakeAfter); d > 0 {
		time.AfterFunc(d, func() {
			// Only the sleep that armed the timer: a guest woken earlier
			// by something else and asleep again starts its own count.
			vm.mu.Lock()
			same := vm.suspends == gen
			vm.mu.Unlock()
			if !same {
				return
			}
			if err := vm.wake(acpi.WakeOther, "--wake-after timer"); err != nil {
				vm.log.Debug("wake-after timer", "err", err)
			}
		})
	}
}

// rtcAlarm is the CMOS RTC's alarm hook. The alarm is an ACPI fixed event:
// with PM1_EN.RTC_EN it wakes a suspended guest (RTC_STS|WAK_STS) and
// raises the SCI (RTC_STS) in a running one.
func (vm *VM) rtcAlarm(m *machine) {
	if m.pm.Enable()&acpi.PM1EnRTC == 0 {
		return
	}
	vm.mu.Lock()
	state, current := vm.state, vm.m == m
	vm.mu.Unlock()
	if !current {
		return
	}
	if state == StateSuspended {
		if err := vm.wake(acpi.WakeRTC, "RTC alarm"); err != nil {
			vm.log.Warn("RTC alarm wake", "err", err)
		}
		return
	}
	m.pm.RaiseFixedEvent(acpi.PM1StsRTC)
}

// Wake resumes a guest suspended in S3, as the host "other" wake source
// (reported to the guest as the power button, as QEMU's system_wakeup is).
// It returns how long the wake took on the host side.
func (vm *VM) Wake() (time.Duration, error) {
	start := time.Now()
	err := vm.wake(acpi.WakeOther, "host request")
	return time.Since(start), err
}

func (vm *VM) wake(reason acpi.WakeReason, source string) error {
	vm.opMu.Lock()
	defer vm.opMu.Unlock()
	vm.mu.Lock()
	if vm.state != StateSuspended {
		state := vm.state
		vm.mu.Unlock()
		return fmt.Errorf("wake: %w: VM is %s, not suspended", ErrState, state)
	}
	m, since := vm.m, vm.suspendedAt
	vm.mu.Unlock()
	start := time.Now()
	// The vCPU that wrote SLP_EN may still be on its way to the gate.
	for _, v := range m.vcpus {
		v.WaitParked()
	}
	vector, err := m.mem.ReadU32(m.facsAddr + facsWakingVector)
	if err != nil {
		return fmt.Errorf("wake: reading the FACS waking vector: %w", err)
	}
	if vector == 0 || vector >= 1<<20 {
		// No real-mode vector: firmware boots normally (SeaBIOS does the
		// same), which for kvmm is a fresh machine.
		vm.log.Warn("S3 wake without a valid waking vector: rebooting", "vector", vector)
		vm.mu.Lock()
		vm.state = StateRunning
		vm.mu.Unlock()
		m.post(event{reboot: true})
		return nil
	}
	if err := m.resetForWake(vector); err != nil {
		// The machine cannot continue coherently.
		m.post(event{result: &Result{Status: StatusVMMError, Reason: err.Error()}})
		return err
	}
	m.pm.Wake(reason)
	vm.mu.Lock()
	vm.state = StateRunning
	vm.mu.Unlock()
	m.resumeAll()
	d := time.Since(start)
	vm.log.Info("guest woken from ACPI S3", "source", source, "reason", reason, "vector", fmt.Sprintf("%#x", vector),
		"slept", time.Since(since), "wake_took", d)
	vm.events.publish(Event{Type: "state", State: StateRunning,
		Detail: fmt.Sprintf("woken from S3 by %s (%s); wake took %s", source, reason, d)})
	return nil
}

// IOAPIC redirection-table layout inside struct kvm_ioapic_state and the
// PIC's reset mask (include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h).
const (
	irqchipPICMaster = 0
	irqchipPICSlave  = 1
	irqchipIOAPIC    = 2
	ioapicRedirOff   = 24 // u64 base_address; u32 ioregsel, id, irr, pad
	ioapicPins       = 24
	ioapicMasked     = 1 << 16
	picIMROff        = 2 // struct kvm_pic_state: last_irr, irr, imr, isr, ...

	// An MSI to the LAPIC with delivery mode INIT (Intel SDM 10.11.2).
	msiAddrBase = 0xFEE00000
	msiDataINIT = 0x5 << 8
)

// msiAddr targets one APIC ID in physical destination mode.
func msiAddr(apicID int) uint64 { return msiAddrBase | uint64(apicID)<<12 }

// resetForWake puts the CPUs and interrupt controllers in the state firmware
// hands to an OS waking vector. Every vCPU is parked.
func (m *machine) resetForWake(vector uint32) error {
	for _, chip := range []uint32{irqchipPICMaster, irqchipPICSlave, irqchipIOAPIC} {
		c := &kvm.IRQChip{ChipID: chip}
		if err := kvm.GetIRQChip(m.vmFd, c); err != nil {
			return fmt.Errorf("KVM_GET_IRQCHIP %d: %w", chip, err)
		}
		if chip == irqchipIOAPIC {
			for pin := 0; pin < ioapicPins; pin++ {
				e := (*uint64)(unsafe.Pointer(&c.Chip[ioapicRedirOff+8*pin]))
				*e = ioapicMasked
			}
		} else {
			// After reset the 8259s are uninitialised with every line
			// masked; the guest reprograms them (Linux: i8259A_resume).
			c.Chip[1], c.Chip[picIMROff], c.Chip[3] = 0, 0xFF, 0
		}
		if err := kvm.SetIRQChip(m.vmFd, c); err != nil {
			return fmt.Errorf("KVM_SET_IRQCHIP %d: %w", chip, err)
		}
	}
	// An INIT IPI to every vCPU is the CPU reset of a platform reset: KVM
	// resets the whole vCPU (registers, MSRs it owns, the LAPIC, pending
	// events) exactly as for a hardware INIT, and leaves the application
	// processors in wait-for-SIPI, which is what Linux's resume expects
	// (it restarts them with INIT/SIPI/SIPI). The boot vCPU is then pointed
	// at the waking vector, as SeaBIOS's s3_resume does with a far jump.
	for _, v := range m.vcpus {
		if err := kvmext.SignalMSI(m.vmFd, msiAddr(v.ID), msiDataINIT); err != nil {
			return fmt.Errorf("vcpu %d: INIT: %w", v.ID, err)
		}
		// KVM_GET_MP_STATE makes KVM accept the pending INIT now.
		if _, err := kvmext.GetMPState(v.FD()); err != nil {
			return fmt.Errorf("vcpu %d: %w", v.ID, err)
		}
	}
	bsp := m.vcpus[0]
	if err := bsp.SetupLAPIC(); err != nil {
		return err
	}
	if err := bsp.SetRealMode(uint16(vector>>4), uint16(vector&0xF)); err != nil {
		return err
	}
	return nil
}
