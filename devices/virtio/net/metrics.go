package net

import "sync/atomic"

// Metrics are a device's counters (Firecracker style: monotonic counts,
// read as a snapshot). Frames and bytes count what crossed between the
// guest and the host; the userspace backend counts them, vhost-net does
// not report them.
type Metrics struct {
	RxFrames uint64 `json:"rx_frames"`
	RxBytes  uint64 `json:"rx_bytes"` // without the virtio header
	// RxDropped counts frames from the host the guest never saw: a
	// receive chain too small (without MRG_RXBUF), a ring full of buffers
	// that together are still too small, an offload the driver did not
	// accept.
	RxDropped uint64 `json:"rx_dropped"`
	// RxWaits counts the times a frame had to wait for the driver to post
	// receive buffers (back-pressure: the tap is not read meanwhile).
	RxWaits uint64 `json:"rx_waits"`
	// RxHostErrors counts failed reads of a tap queue (the receive worker
	// then stops until the next reset).
	RxHostErrors uint64 `json:"rx_host_errors"`
	TxFrames     uint64 `json:"tx_frames"`
	TxBytes      uint64 `json:"tx_bytes"` // without the virtio header
	// TxDropped counts guest frames not sent: shorter than a header and
	// an Ethernet header, longer than MaxFrameLen, or refused by the tap
	// (a malformed virtio header, the link down).
	TxDropped uint64 `json:"tx_dropped"`
	// CtrlCommands counts control queue requests; CtrlErrors those
	// answered VIRTIO_NET_ERR.
	CtrlCommands uint64 `json:"ctrl_commands"`
	CtrlErrors   uint64 `json:"ctrl_errors"`
	// VhostStarts and VhostStops count vhost-net Start and Stop calls
	// (activation, queue pair changes, interrupt re-wiring, reset).
	VhostStarts uint64 `json:"vhost_starts"`
	VhostStops  uint64 `json:"vhost_stops"`
}

type metrics struct {
	rxFrames, rxBytes, rxDropped, rxWaits, rxHostErrors atomic.Uint64
	txFrames, txBytes, txDropped                        atomic.Uint64
	ctrlCommands, ctrlErrors, vhostStarts, vhostStops   atomic.Uint64
}

func (m *metrics) snapshot() Metrics {
	return Metrics{
		RxFrames: m.rxFrames.Load(), RxBytes: m.rxBytes.Load(), RxDropped: m.rxDropped.Load(),
		RxWaits: m.rxWaits.Load(), RxHostErrors: m.rxHostErrors.Load(),
		TxFrames: m.txFrames.Load(), TxBytes: m.txBytes.Load(), TxDropped: m.txDropped.Load(),
		CtrlCommands: m.ctrlCommands.Load(), CtrlErrors: m.ctrlErrors.Load(),
		VhostStarts: m.vhostStarts.Load(), VhostStops: m.vhostStops.Load(),
	}
}
