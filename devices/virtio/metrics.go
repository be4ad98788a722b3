package virtio

import "sync/atomic"

// TransportMetrics are a transport's counters (Firecracker style: plain
// monotonic counts, read as a snapshot).
type TransportMetrics struct {
	// MMIONotifies counts queue notifications that reached kvmm as MMIO
	// exits: every one when there is no ioeventfd, else only accesses the
	// ioeventfd does not match.
	MMIONotifies uint64 `json:"mmio_notifies"`
	// IOEventFDRegistrations counts KVM_IOEVENTFD assignments (activation
	// and BAR moves).
	IOEventFDRegistrations uint64 `json:"ioeventfd_registrations"`
	MSIXInterrupts         uint64 `json:"msix_interrupts"`
	INTxInterrupts         uint64 `json:"intx_interrupts"`
	// SuppressedInterrupts: MSI-X was on and the driver chose no vector.
	SuppressedInterrupts uint64 `json:"suppressed_interrupts"`
	ConfigInterrupts     uint64 `json:"config_interrupts"`
	Resets               uint64 `json:"resets"`
	Activations          uint64 `json:"activations"`
	// FeaturesRefused counts FEATURES_OK writes the device refused.
	FeaturesRefused uint64 `json:"features_refused"`
	// DeviceErrors counts DEVICE_NEEDS_RESET events.
	DeviceErrors uint64 `json:"device_errors"`
}

type transportMetrics struct {
	mmioNotifies, ioeventfds, msix, intx, suppressed, config atomic.Uint64
	resets, activations, refused, errors                     atomic.Uint64
}

func (m *transportMetrics) snapshot() TransportMetrics {
	return TransportMetrics{
		MMIONotifies: m.mmioNotifies.Load(), IOEventFDRegistrations: m.ioeventfds.Load(),
		MSIXInterrupts: m.msix.Load(), INTxInterrupts: m.intx.Load(), SuppressedInterrupts: m.suppressed.Load(),
		ConfigInterrupts: m.config.Load(), Resets: m.resets.Load(), Activations: m.activations.Load(),
		FeaturesRefused: m.refused.Load(), DeviceErrors: m.errors.Load(),
	}
}
