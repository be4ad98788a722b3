package blk

import "sync/atomic"

// Metrics are the disk's counters.
type Metrics struct {
	Reads       uint64 `json:"reads"`
	Writes      uint64 `json:"writes"`
	Flushes     uint64 `json:"flushes"`
	GetIDs      uint64 `json:"get_ids"`
	ReadBytes   uint64 `json:"read_bytes"`
	WriteBytes  uint64 `json:"write_bytes"`
	IOErrors    uint64 `json:"io_errors"`
	Unsupported uint64 `json:"unsupported"`
	// BadRequests are requests without a header or status byte (the
	// device then needs a reset).
	BadRequests uint64 `json:"bad_requests"`
}

type metrics struct {
	reads, writes, flushes, getIDs, readBytes, writeBytes atomic.Uint64
	ioErrors, unsupported, badRequests                    atomic.Uint64
}

// Metrics returns a snapshot of the counters.
func (d *Device) Metrics() Metrics {
	m := &d.m
	return Metrics{Reads: m.reads.Load(), Writes: m.writes.Load(), Flushes: m.flushes.Load(), GetIDs: m.getIDs.Load(),
		ReadBytes: m.readBytes.Load(), WriteBytes: m.writeBytes.Load(), IOErrors: m.ioErrors.Load(),
		Unsupported: m.unsupported.Load(), BadRequests: m.badRequests.Load()}
}
