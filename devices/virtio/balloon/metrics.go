package balloon

import "sync/atomic"

// Metrics are the device's own counters, next to the ledger's (which count
// the buffers of each queue as commands and the refused pages by kind).
type Metrics struct {
	// PagesInflated and PagesDeflated count PFNs the ledger accepted;
	// PagesRefused those it refused (not RAM, already held, not held).
	PagesInflated uint64 `json:"pages_inflated"`
	PagesDeflated uint64 `json:"pages_deflated"`
	PagesRefused  uint64 `json:"pages_refused"`
	// ReportedRanges and ReportedBytes are the free page ranges given
	// back to the host through free page reporting (not ballooned: the
	// guest keeps using them); ReportRefused the ranges refused
	// (misaligned, or the discard failed).
	ReportedRanges uint64 `json:"reported_ranges"`
	ReportedBytes  uint64 `json:"reported_bytes"`
	ReportRefused  uint64 `json:"report_refused"`
	// MalformedBuffers are buffers whose payload was not what the queue
	// carries (a partial PFN, more than MaxPFNBytes, a partial statistics
	// entry, buffers in the wrong direction); what could be read was used.
	MalformedBuffers uint64 `json:"malformed_buffers"`
	// ActualUpdates counts the driver's writes of the actual field.
	ActualUpdates uint64 `json:"actual_updates"`
	// StatsUpdates counts statistics buffers the driver sent;
	// StatsRequests the host's requests for fresh ones and StatsTimeouts
	// those the guest did not answer in time.
	StatsUpdates  uint64 `json:"stats_updates"`
	StatsRequests uint64 `json:"stats_requests"`
	StatsTimeouts uint64 `json:"stats_timeouts"`
	// ResetsHolding counts device resets while the balloon held pages:
	// the guest forgot them without deflating (a crashed or kexec'd
	// driver), and so did the ledger.
	ResetsHolding uint64 `json:"resets_holding"`
}

type metrics struct {
	inflated, deflated, refused                  atomic.Uint64
	reportedRanges, reportedBytes, reportRefused atomic.Uint64
	malformed, actualUpdates                     atomic.Uint64
	statsUpdates, statsRequests, statsTimeouts   atomic.Uint64
	resetsHolding                                atomic.Uint64
}

// Metrics returns a snapshot of the counters.
func (d *Device) Metrics() Metrics {
	m := &d.m
	return Metrics{
		PagesInflated: m.inflated.Load(), PagesDeflated: m.deflated.Load(), PagesRefused: m.refused.Load(),
		ReportedRanges: m.reportedRanges.Load(), ReportedBytes: m.reportedBytes.Load(), ReportRefused: m.reportRefused.Load(),
		MalformedBuffers: m.malformed.Load(), ActualUpdates: m.actualUpdates.Load(),
		StatsUpdates: m.statsUpdates.Load(), StatsRequests: m.statsRequests.Load(), StatsTimeouts: m.statsTimeouts.Load(),
		ResetsHolding: m.resetsHolding.Load(),
	}
}
