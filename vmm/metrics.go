package vmm

import (
	"sort"
	"time"

	"github.com/kvmm/kvmm/devices"
	"github.com/kvmm/kvmm/devices/virtio"
)

// Metrics is a snapshot of the VM's counters.
type Metrics struct {
	Uptime time.Duration `json:"uptime_ns"`
	// Exits counts vCPU exits by KVM exit reason, summed over vCPUs.
	Exits map[string]uint64 `json:"exits"`
	// VCPUs has each vCPU's run time (inside KVM_RUN) and exit counts.
	VCPUs []VCPUMetrics `json:"vcpus"`
	// PIO and MMIO are the device ranges by accesses, busiest first.
	PIO  []devices.RangeStats `json:"pio"`
	MMIO []devices.RangeStats `json:"mmio"`
	// Devices has the virtio devices' transport counters (notifications,
	// interrupts, resets, errors) by device name.
	Devices map[string]virtio.TransportMetrics `json:"devices,omitempty"`
	// Reboots counts guest reboots since the VM was created.
	Reboots uint64 `json:"reboots"`
}

// VCPUMetrics is one vCPU's share.
type VCPUMetrics struct {
	ID      int               `json:"id"`
	RunTime time.Duration     `json:"run_time_ns"`
	Exits   map[string]uint64 `json:"exits"`
}

// Metrics returns the counters; top limits the PIO and MMIO lists to the
// busiest ranges (0 = all).
func (vm *VM) Metrics(top int) Metrics {
	vm.mu.Lock()
	m, reboots := vm.m, vm.reboots
	started := vm.started
	vm.mu.Unlock()
	out := Metrics{Exits: map[string]uint64{}, Reboots: reboots}
	if !started.IsZero() {
		out.Uptime = time.Since(started)
	}
	if m == nil {
		return out
	}
	for _, v := range m.vcpus {
		s := v.Stats()
		out.VCPUs = append(out.VCPUs, VCPUMetrics{ID: v.ID, RunTime: s.RunTime, Exits: s.Exits})
		for k, n := range s.Exits {
			out.Exits[k] += n
		}
	}
	for name, t := range m.virtioTransports() {
		if out.Devices == nil {
			out.Devices = map[string]virtio.TransportMetrics{}
		}
		out.Devices[name] = t.Metrics()
	}
	out.PIO = busiest(m.pio.Stats(), top)
	out.MMIO = busiest(m.mmio.Stats(), top)
	return out
}

func busiest(s []devices.RangeStats, top int) []devices.RangeStats {
	sort.SliceStable(s, func(i, j int) bool { return s[i].Accesses > s[j].Accesses })
	if top > 0 && len(s) > top {
		s = s[:top]
	}
	return s
}
