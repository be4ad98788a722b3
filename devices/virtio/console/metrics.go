package console

import "sync/atomic"

// Metrics are the console's counters.
type Metrics struct {
	TxBytes     uint64 `json:"tx_bytes"`
	RxBytes     uint64 `json:"rx_bytes"`
	TxErrors    uint64 `json:"tx_errors"`
	EmergWrites uint64 `json:"emerg_writes"`
}

type metrics struct {
	txBytes, rxBytes, txErrors, emergWrites atomic.Uint64
}

// Metrics returns a snapshot of the counters.
func (d *Device) Metrics() Metrics {
	return Metrics{TxBytes: d.m.txBytes.Load(), RxBytes: d.m.rxBytes.Load(), TxErrors: d.m.txErrors.Load(),
		EmergWrites: d.m.emergWrites.Load()}
}
