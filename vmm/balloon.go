package vmm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bobuhiro11/gokvm/kvm"

	"github.com/kvmm/kvmm/balloon"
	virtioballoon "github.com/kvmm/kvmm/devices/virtio/balloon"
	"github.com/kvmm/kvmm/vcpu"
)

// The VMware personality's wiring: its CPUID leaves, the backdoor and
// balloon ports with the registers moved between the vCPU and package
// balloon, and the VM's balloon API (target and stats), which also serves
// virtio-balloon (devices/virtio/balloon, on PCI with the other virtio
// devices: virtio.go). The protocols are in package balloon; both balloons
// keep their accounting in a balloon.Ledger.

// Balloon kinds (Config.Balloon).
const (
	// BalloonAuto (empty) is the personality's own balloon: VMware's for
	// personality vmware, none for the others. virtio-balloon, the kvm
	// personality's usual balloon, is not added by default: it takes a
	// PCI slot, a BAR and four queue eventfds, and changes the PCI
	// topology every guest and golden dump sees; `--balloon virtio` asks
	// for it (as QEMU's -device virtio-balloon-pci does).
	BalloonAuto   = ""
	BalloonNone   = "none"
	BalloonVMware = "vmware"
	// BalloonVirtio is virtio-balloon, with any personality (Linux's
	// virtio_balloon does not care which hypervisor it runs on).
	BalloonVirtio = "virtio"
)

// balloonStatsWait bounds how long BalloonStats waits for the guest's
// virtio-balloon driver to send fresh memory statistics: Linux answers from
// a workqueue within milliseconds; a guest that does not (paused vCPUs, a
// driver gone) costs an API call this much, then the last statistics are
// shown as not fresh.
const balloonStatsWait = time.Second

// ErrNoBalloon is wrapped by the balloon methods of a VM without a balloon.
var ErrNoBalloon = errors.New("the VM has no memory balloon")

// cpuidX2APIC is CPUID.1:ECX[21].
const cpuidX2APIC = 1 << 21

// validateBalloon checks Config.Balloon without asking the host.
func validateBalloon(c *Config) error {
	switch c.Balloon {
	case BalloonAuto, BalloonNone:
		return nil
	case BalloonVMware:
		if c.Personality != string(vcpu.PersonalityVMware) {
			// vmw_balloon refuses to load (-ENODEV) unless Linux picked
			// VMware as its hypervisor.
			return fmt.Errorf("balloon vmware needs personality vmware, not %q: the guest's vmw_balloon driver only loads on VMware", c.Personality)
		}
		return nil
	case BalloonVirtio:
		return nil // a PCI slot: validateVirtio counts it
	}
	return fmt.Errorf("balloon %q: want none, vmware or virtio (empty: the personality's own)", c.Balloon)
}

// balloonKind is the balloon a valid config gets.
func (c Config) balloonKind() string {
	if c.Balloon == BalloonAuto {
		if c.Personality == string(vcpu.PersonalityVMware) {
			return BalloonVMware
		}
		return BalloonNone
	}
	return c.Balloon
}

// vmwareState is a machine's VMware personality.
type vmwareState struct {
	backdoor *balloon.Backdoor
	balloon  *balloon.VMware // nil without the VMware balloon
	log      *slog.Logger
}

// setupVMware gives a machine whose vCPUs exist the VMware personality
// (no-op for others): the VMware leaves over every vCPU's CPUID
// (ComposeCPUID already dropped KVM's and exposed the invariant TSC), the
// backdoor, and the balloon with the target carried over from the
// machine this one replaces (a guest reboot keeps the host's target).
func (m *machine) setupVMware(vm *VM) error {
	m.carryVirtioBalloonTarget(vm)
	if m.cfg.Personality != string(vcpu.PersonalityVMware) {
		return nil
	}
	log := m.log.With("dev", "vmware")
	khz, err := kvm.GetTSCKHz(m.vcpus[0].FD())
	if err != nil || khz == 0 || khz > 1<<32-1 {
		// Not fatal: Linux calibrates the TSC itself when GETHZ fails.
		log.Warn("guest TSC frequency unknown: CPUID 0x40000010 and GETHZ will not report it", "khz", khz, "err", err)
		khz = 0
	}
	leaves := vcpu.VMwareLeaves(uint32(khz), vcpu.KVMAPICBusKHz)
	x2apic := false
	for _, v := range m.vcpus {
		// KVM_SET_CPUID2 may be repeated until the vCPU first runs.
		cur := &kvm.CPUID{Nent: 256, Entries: make([]kvm.CPUIDEntry2, 256)}
		if err := kvm.GetCPUID2(v.FD(), cur); err != nil {
			return fmt.Errorf("vmware personality: vcpu %d: KVM_GET_CPUID2: %w", v.ID, err)
		}
		entries := cur.Entries[:cur.Nent]
		for _, e := range entries {
			if e.Function == 1 && v.ID == 0 {
				x2apic = e.Ecx&cpuidX2APIC != 0
			}
		}
		if err := v.SetCPUID(vcpu.MergeCPUID(entries, leaves)); err != nil {
			return fmt.Errorf("vmware personality: %w", err)
		}
	}
	s := &vmwareState{log: log,
		backdoor: balloon.NewBackdoor(balloon.BackdoorConfig{TSCHz: khz * 1000,
			APICBusHz: vcpu.KVMAPICBusKHz * 1000, X2APIC: x2apic}, log)}
	if m.cfg.balloonKind() == BalloonVMware {
		ledger := balloon.NewLedger(m.mem, balloon.VMwareCommands, log)
		if prev := vm.previousBalloon(); prev != nil {
			if err := ledger.SetTarget(prev.Target()); err != nil {
				log.Warn("balloon target not carried over the reboot", "err", err)
			}
		}
		s.balloon = balloon.NewVMware(ledger, m.mem, log)
	}
	log.Info("VMware personality", "tsc_khz", khz, "x2apic", x2apic, "balloon", s.balloon != nil)
	m.vmw = s
	return nil
}

// previousBalloon is the ledger of the VM's current machine while a new
// one is being built (a guest reboot), or nil.
func (vm *VM) previousBalloon() *balloon.Ledger {
	vm.mu.Lock()
	m := vm.m
	vm.mu.Unlock()
	if m == nil {
		return nil
	}
	if vb := m.virtioBalloon(); vb != nil {
		return vb.Ledger()
	}
	if m.vmw == nil || m.vmw.balloon == nil {
		return nil
	}
	return m.vmw.balloon.Ledger()
}

// addVirtioBalloon creates the virtio-balloon device of a machine whose
// balloon is virtio (addVirtio puts it on PCI with the other virtio
// devices), with a ledger of its own over the machine's RAM.
func (m *machine) addVirtioBalloon(st *virtioState) error {
	if m.cfg.balloonKind() != BalloonVirtio {
		return nil
	}
	log := m.log.With("dev", "virtio-balloon")
	dev, err := virtioballoon.New(virtioballoon.Config{
		Ledger: balloon.NewLedger(m.mem, virtioballoon.Commands, log), Log: log})
	if err != nil {
		return err
	}
	st.balloon = dev
	st.devs = append(st.devs, &virtioDev{name: "virtio-balloon", bus: m.cfg.PCIBus, dev: dev})
	return nil
}

// carryVirtioBalloonTarget gives a new machine's virtio-balloon the target
// of the machine it replaces (a guest reboot keeps the host's target, as
// with the VMware balloon). setupVMware calls it: every machine passes
// there once its devices exist, with the VM at hand.
func (m *machine) carryVirtioBalloonTarget(vm *VM) {
	vb := m.virtioBalloon()
	if vb == nil {
		return
	}
	if prev := vm.previousBalloon(); prev != nil && prev != vb.Ledger() {
		if err := vb.SetTarget(prev.Target()); err != nil {
			m.log.Warn("balloon target not carried over the reboot", "err", err)
		}
	}
}

// virtioBalloon is the machine's virtio-balloon, or nil.
func (m *machine) virtioBalloon() *virtioballoon.Device {
	if m == nil || m.virtio == nil {
		return nil
	}
	return m.virtio.balloon
}

// pio serves the backdoor and balloon ports (machine.PIO); false means
// the port is not one of them (or the VM has no VMware personality) and
// the bus gets the access.
//
// A call is a 4-byte IN: read the registers, let package balloon answer,
// write them back with RIP unchanged (KVM completes the IN on the next
// KVM_RUN: EAX from the I/O data, RIP past the instruction; it drops the
// completion if RIP moved), and put EAX in the I/O data too. Hardware KVM
// takes EAX from the data area; this workplace's KVM from the registers
// (guest-protocols.md §5): both hold the answer.
func (s *vmwareState) pio(v *vcpu.VCPU, port uint16, data []byte, write bool) bool {
	if s == nil {
		return false
	}
	serve := s.backdoor.Serve
	switch {
	case port == balloon.BackdoorPort:
	case port == balloon.BalloonPort && s.balloon != nil:
		serve = s.balloon.Serve
	default:
		return false
	}
	if write || len(data) != 4 || v == nil {
		// Only a 4-byte IN is a call. Other reads see an empty port and
		// writes are dropped, as on QEMU's vmport.
		if !write {
			fill(data, 0xFF)
		}
		return true
	}
	kr, err := v.Regs()
	if err != nil {
		s.log.Error("VMware port: reading the caller's registers", "port", fmt.Sprintf("%#x", port), "err", err)
		fill(data, 0xFF)
		return true
	}
	r := balloon.Regs{RAX: kr.RAX, RBX: kr.RBX, RCX: kr.RCX, RDX: kr.RDX, RSI: kr.RSI, RDI: kr.RDI}
	serve(&r)
	eax := uint32(r.RAX)
	kr.RAX, kr.RBX, kr.RCX, kr.RDX, kr.RSI, kr.RDI = uint64(eax), r.RBX, r.RCX, r.RDX, r.RSI, r.RDI
	if err := v.SetRegs(kr); err != nil {
		s.log.Error("VMware port: writing the answer registers", "port", fmt.Sprintf("%#x", port), "err", err)
	}
	binary.LittleEndian.PutUint32(data, eax)
	return true
}

// BalloonStats is a VM's memory balloon (GET /vm/balloon).
type BalloonStats struct {
	// Kind is the balloon's protocol: "vmware" (Linux's vmw_balloon) or
	// "virtio" (virtio-balloon, Linux's virtio_balloon).
	Kind string `json:"kind"`
	balloon.Stats
	// VMware is the protocol state with the guest's vmw_balloon driver.
	VMware *balloon.VMwareState `json:"vmware,omitempty"`
	// Virtio is virtio-balloon's side: the driver's state, free page
	// reporting, and the guest's memory statistics.
	Virtio *virtioballoon.State `json:"virtio,omitempty"`
}

// vmwBalloon returns the current machine's VMware balloon, or an error
// wrapping ErrNoBalloon.
func (vm *VM) vmwBalloon() (*balloon.VMware, error) {
	vm.mu.Lock()
	m := vm.m
	vm.mu.Unlock()
	if m == nil || m.vmw == nil || m.vmw.balloon == nil {
		return nil, fmt.Errorf("%w (personality %s, balloon %q): start it with --balloon virtio, or with personality vmware",
			ErrNoBalloon, vm.cfg.Personality, vm.cfg.Balloon)
	}
	return m.vmw.balloon, nil
}

// currentVirtioBalloon is the current machine's virtio-balloon, or nil.
func (vm *VM) currentVirtioBalloon() *virtioballoon.Device {
	vm.mu.Lock()
	m := vm.m
	vm.mu.Unlock()
	return m.virtioBalloon()
}

// virtioBalloonStats is BalloonStats for virtio-balloon. With fresh, the
// device first asks the guest's driver for new memory statistics and waits
// up to balloonStatsWait; a guest that does not answer leaves the last ones
// (GuestStats.Fresh false).
func (vm *VM) virtioBalloonStats(vb *virtioballoon.Device, fresh bool) BalloonStats {
	var g virtioballoon.GuestStats
	var err error
	if fresh {
		ctx, cancel := context.WithTimeout(context.Background(), balloonStatsWait)
		g, err = vb.RequestStats(ctx)
		cancel()
		if err != nil {
			vm.log.Debug("balloon: no fresh statistics from the guest", "err", err)
		}
	}
	st := vb.State()
	if fresh && err == nil {
		st.GuestStats = &g // the answer itself, marked fresh
	}
	return BalloonStats{Kind: BalloonVirtio, Stats: vb.Ledger().Stats(), Virtio: &st}
}

// BalloonStats returns the balloon's target, the pages it holds, the host
// memory it gave back and its counters; on a stopped VM, the last ones.
// With virtio-balloon on a running VM it first asks the guest for fresh
// memory statistics (free, available, total memory), waiting at most
// balloonStatsWait.
func (vm *VM) BalloonStats() (BalloonStats, error) {
	if vb := vm.currentVirtioBalloon(); vb != nil {
		return vm.virtioBalloonStats(vb, vm.State() == StateRunning), nil
	}
	b, err := vm.vmwBalloon()
	if err != nil {
		return BalloonStats{}, err
	}
	st := b.State()
	return BalloonStats{Kind: BalloonVMware, Stats: b.Ledger().Stats(), VMware: &st}, nil
}

// SetBalloonTarget sets the balloon's target: how much memory, in bytes,
// the guest's balloon driver should take from the guest and hand to the
// host (the balloon size, as vmw_balloon's GET_TARGET and virtio-balloon's
// num_pages mean it; not what the guest keeps). 0 gives everything back.
// It must be a multiple of 4 KiB and at most the guest's RAM (errors wrap
// balloon.ErrTarget). vmw_balloon polls for it about once a second;
// virtio-balloon's driver gets a configuration interrupt at once. The
// stats show it follow.
func (vm *VM) SetBalloonTarget(bytes uint64) (BalloonStats, error) {
	if s := vm.State(); s == StateStopped {
		return BalloonStats{}, fmt.Errorf("balloon target: %w: VM is %s", ErrState, s)
	}
	if vb := vm.currentVirtioBalloon(); vb != nil {
		if err := vb.SetTarget(bytes); err != nil {
			return BalloonStats{}, err
		}
		vm.log.Info("balloon target set", "bytes", bytes, "size", Size(bytes).String(), "kind", BalloonVirtio)
		return vm.virtioBalloonStats(vb, false), nil
	}
	b, err := vm.vmwBalloon()
	if err != nil {
		return BalloonStats{}, err
	}
	if err := b.Ledger().SetTarget(bytes); err != nil {
		return BalloonStats{}, err
	}
	vm.log.Info("balloon target set", "bytes", bytes, "size", Size(bytes).String())
	return vm.BalloonStats()
}
