package apitest

import (
	"fmt"

	"github.com/kvmm/kvmm/balloon"
	"github.com/kvmm/kvmm/vmm"
)

// EnableBalloon gives the fake the VMware personality and a VMware balloon
// whose guest driver has negotiated (capabilities 0x2e, guest id 1) and
// follows every target at once, in 2 MiB pages and then 4 KiB ones. A new
// fake has no balloon, as a VM with the default (kvm) personality.
func (f *FakeVM) EnableBalloon() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg.Personality = "vmware"
	// A fresh ledger's stats name every command and error kind.
	zero := balloon.NewLedger(nil, balloon.VMwareCommands, nil).Stats()
	f.balloon = &vmm.BalloonStats{Kind: vmm.BalloonVMware, Stats: zero,
		VMware: &balloon.VMwareState{Negotiated: true, Capabilities: balloon.HostCaps, GuestID: 1, Starts: 1}}
	f.balloon.Commands["start"], f.balloon.Commands["guest_id"] = 1, 1
}

// BalloonStats returns the fake balloon's stats, as vmm.VM.BalloonStats.
func (f *FakeVM) BalloonStats() (vmm.BalloonStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.balloon == nil {
		return vmm.BalloonStats{}, fmt.Errorf("%w (personality %s)", vmm.ErrNoBalloon, f.cfg.Personality)
	}
	return f.balloonCopy(), nil
}

// SetBalloonTarget checks the target as vmm.VM.SetBalloonTarget does; the
// fake guest then holds exactly the target.
func (f *FakeVM) SetBalloonTarget(bytes uint64) (vmm.BalloonStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.state == vmm.StateStopped:
		return vmm.BalloonStats{}, fmt.Errorf("balloon target: %w: VM is %s", vmm.ErrState, f.state)
	case f.balloon == nil:
		return vmm.BalloonStats{}, fmt.Errorf("%w (personality %s)", vmm.ErrNoBalloon, f.cfg.Personality)
	}
	// The real ledger checks the target, so the refusals read the same.
	if err := balloon.NewLedger(ramSize(f.cfg.Memory), nil, nil).SetTarget(bytes); err != nil {
		return vmm.BalloonStats{}, err
	}
	b := f.balloon
	if bytes > b.HeldBytes {
		b.ReturnedBytes += bytes - b.HeldBytes
		b.Commands["batched_2m_lock"]++
	} else if bytes < b.HeldBytes {
		b.Commands["batched_2m_unlock"]++
	}
	b.Commands["get_target"]++
	b.TargetBytes, b.HeldBytes = bytes, bytes
	b.Held2M = bytes / uint64(balloon.Page2M)
	b.Held4K = bytes % uint64(balloon.Page2M) / uint64(balloon.Page4K)
	return f.balloonCopy(), nil
}

func (f *FakeVM) balloonCopy() vmm.BalloonStats {
	c := *f.balloon
	c.Commands, c.Errors = map[string]uint64{}, map[string]uint64{}
	for k, v := range f.balloon.Commands {
		c.Commands[k] = v
	}
	for k, v := range f.balloon.Errors {
		c.Errors[k] = v
	}
	st := *f.balloon.VMware
	c.VMware = &st
	return c
}

// ramSize is a balloon.Memory of that size with nothing in it: enough for
// Ledger.SetTarget, which only asks for the size.
type ramSize uint64

func (r ramSize) Contains(gpa, n uint64) bool      { return false }
func (r ramSize) Read(gpa uint64, b []byte) error  { return balloon.ErrNotRAM }
func (r ramSize) Write(gpa uint64, b []byte) error { return balloon.ErrNotRAM }
func (r ramSize) Discard(gpa, n uint64) error      { return balloon.ErrNotRAM }
func (r ramSize) Size() uint64                     { return uint64(r) }
