package rng

import "sync/atomic"

// Metrics are the device's counters.
type Metrics struct {
	Requests uint64 `json:"requests"`
	Bytes    uint64 `json:"bytes"`
	Errors   uint64 `json:"errors"`
}

type metrics struct {
	requests, bytes, errors atomic.Uint64
}

// Metrics returns a snapshot of the counters.
func (d *Device) Metrics() Metrics {
	return Metrics{Requests: d.m.requests.Load(), Bytes: d.m.bytes.Load(), Errors: d.m.errors.Load()}
}
