package hyperv

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

// RefTimeHz is the rate of the partition reference time: 100 ns units.
const RefTimeHz = 10_000_000

// TSCScale is the reference TSC page's scale for a TSC of tscHz:
// floor(2^64 * 10^7 / tscHz), so that (tsc * scale) >> 64 counts 100 ns
// units. The TSC must be faster than 10 MHz, or the scale would not fit in
// 64 bits.
func TSCScale(tscHz uint64) (uint64, error) {
	if tscHz <= RefTimeHz {
		return 0, fmt.Errorf("TSC frequency %d Hz: must be above %d Hz for a reference TSC page", tscHz, RefTimeHz)
	}
	// (10^7 << 64) / tscHz; the high word 10^7 < tscHz, so no overflow.
	q, _ := bits.Div64(RefTimeHz, 0, tscHz)
	return q, nil
}

// mulHi64 is (a * b) >> 64, the guest's mul_u64_u64_shr(tsc, scale, 64).
func mulHi64(a, b uint64) uint64 {
	hi, _ := bits.Mul64(a, b)
	return hi
}

// RefClock is the partition reference time, derived from the guest's TSC
// by the very formula the reference TSC page gives the guest:
//
//	ref = ((tsc * scale) >> 64) + offset   (mod 2^64, 100 ns units)
//
// TIME_REF_COUNT evaluates it with the TSC KVM reports for the reading
// vCPU, so the MSR and the page agree exactly, on every vCPU (KVM keeps the
// vCPUs' TSCs synchronised). offset starts so that the time is 0 at VM
// creation. The guest TSC keeps running while the VM is paused; Pause and
// Resume take the paused interval out of the reference time by moving the
// offset back, which is why the TSC page must be rewritten on Resume.
// Read additionally never returns less than it returned before, so the MSR
// is monotonic even across vCPUs whose TSCs differ by a few ticks.
type RefClock struct {
	scale uint64

	mu       sync.Mutex
	offset   uint64 // two's complement of the page's s64 tsc_offset
	paused   bool
	pausedAt uint64 // reference time at Pause

	last atomic.Uint64 // largest value Read returned
}

// NewRefClock starts a reference clock at 0 for a guest TSC of tscHz that
// reads tscNow.
func NewRefClock(tscHz, tscNow uint64) (*RefClock, error) {
	scale, err := TSCScale(tscHz)
	if err != nil {
		return nil, err
	}
	return &RefClock{scale: scale, offset: -mulHi64(tscNow, scale)}, nil
}

// Scale is the page's tsc_scale.
func (c *RefClock) Scale() uint64 { return c.scale }

// Offset is the page's tsc_offset.
func (c *RefClock) Offset() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(c.offset)
}

// At is the reference time the page formula gives for a TSC value.
func (c *RefClock) At(tsc uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at(tsc)
}

func (c *RefClock) at(tsc uint64) uint64 { return mulHi64(tsc, c.scale) + c.offset }

// Read is TIME_REF_COUNT for a vCPU whose TSC reads tsc: At(tsc), or the
// time at Pause while paused, and never less than an earlier Read.
func (c *RefClock) Read(tsc uint64) uint64 {
	c.mu.Lock()
	v := c.at(tsc)
	if c.paused {
		v = c.pausedAt
	}
	c.mu.Unlock()
	for {
		old := c.last.Load()
		if v <= old {
			return old
		}
		if c.last.CompareAndSwap(old, v) {
			return v
		}
	}
}

// Last is the largest value Read has returned, for a reader whose TSC
// could not be read.
func (c *RefClock) Last() uint64 { return c.last.Load() }

// Pause stops the reference time at its value for TSC tsc.
func (c *RefClock) Pause(tsc uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		return
	}
	c.paused, c.pausedAt = true, c.at(tsc)
}

// Resume restarts the reference time from where Pause stopped it, the TSC
// now reading tsc. It reports whether the offset changed (the TSC page must
// then be rewritten before any vCPU runs).
func (c *RefClock) Resume(tsc uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.paused {
		return false
	}
	c.paused = false
	now := c.at(tsc)
	if int64(now-c.pausedAt) <= 0 {
		return false // the TSC did not advance (or went back): nothing to take out
	}
	c.offset -= now - c.pausedAt
	return true
}

// Reference TSC page layout (struct ms_hyperv_tsc_page, little endian).
const (
	TSCPageSequence = 0  // u32 tsc_sequence; 0 means invalid
	TSCPageScale    = 8  // u64 tsc_scale
	TSCPageOffset   = 16 // s64 tsc_offset
	TSCPageSize     = 4096
)

// NextSequence is the sequence after s. 0 tells the guest the page is
// invalid and 0xFFFFFFFF was the invalid marker of older specs (KVM avoids
// both), so neither is ever produced.
func NextSequence(s uint32) uint32 {
	s++
	if s == 0 || s == 0xFFFFFFFF {
		s = 1
	}
	return s
}

// EncodeTSCPage writes the page's fields into b (at least 24 bytes).
func EncodeTSCPage(b []byte, seq uint32, scale uint64, offset int64) {
	binary.LittleEndian.PutUint32(b[TSCPageSequence:], seq)
	binary.LittleEndian.PutUint64(b[TSCPageScale:], scale)
	binary.LittleEndian.PutUint64(b[TSCPageOffset:], uint64(offset))
}
