package hyperv

import "sync/atomic"

// counters are the partition's MSR statistics.
type counters struct {
	reads   atomic.Uint64
	writes  atomic.Uint64
	faults  atomic.Uint64 // accesses answered with #GP
	unknown atomic.Uint64 // accesses to synthetic MSRs not offered (read 0 / ignored)
	crashes atomic.Uint64
}

// Stats is a snapshot of the partition's counters.
type Stats struct {
	MSRReads   uint64 `json:"msr_reads"`
	MSRWrites  uint64 `json:"msr_writes"`
	GPFaults   uint64 `json:"gp_faults"`
	UnknownMSR uint64 `json:"unknown_msr_accesses"`
	Crashes    uint64 `json:"crash_reports"`
}

// Stats reads the counters.
func (p *Partition) Stats() Stats {
	return Stats{
		MSRReads:   p.stats.reads.Load(),
		MSRWrites:  p.stats.writes.Load(),
		GPFaults:   p.stats.faults.Load(),
		UnknownMSR: p.stats.unknown.Load(),
		Crashes:    p.stats.crashes.Load(),
	}
}
