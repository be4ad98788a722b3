package devices

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Bus maps address ranges (I/O ports or guest-physical MMIO) to devices.
// Lookups happen on every exit from every vCPU; insertions and removals
// (BAR moves) are rare, so a read-write lock guards a sorted slice.
type Bus struct {
	name    string
	mu      sync.RWMutex
	entries []*busEntry // sorted by base, non-overlapping
}

type busEntry struct {
	base, size uint64
	name       string
	dev        Device
	accesses   atomic.Uint64
}

// NewBus returns an empty bus; name ("pio", "mmio") appears in errors.
func NewBus(name string) *Bus { return &Bus{name: name} }

// Insert maps [base, base+size) to dev. Overlaps are refused.
func (b *Bus) Insert(base, size uint64, name string, dev Device) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("%s bus: %s: bad range [%#x, +%#x)", b.name, name, base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base >= base })
	if i > 0 {
		if p := b.entries[i-1]; p.base+p.size > base {
			return fmt.Errorf("%s bus: %s [%#x, +%#x) overlaps %s [%#x, +%#x)", b.name, name, base, size, p.name, p.base, p.size)
		}
	}
	if i < len(b.entries) {
		if n := b.entries[i]; base+size > n.base {
			return fmt.Errorf("%s bus: %s [%#x, +%#x) overlaps %s [%#x, +%#x)", b.name, name, base, size, n.name, n.base, n.size)
		}
	}
	e := &busEntry{base: base, size: size, name: name, dev: dev}
	b.entries = append(b.entries, nil)
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = e
	return nil
}

// Remove unmaps the range that starts at base.
func (b *Bus) Remove(base uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, e := range b.entries {
		if e.base == base {
			b.entries = append(b.entries[:i], b.entries[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("%s bus: nothing mapped at %#x", b.name, base)
}

func (b *Bus) find(addr uint64) *busEntry {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base+b.entries[i].size > addr })
	if i < len(b.entries) && b.entries[i].base <= addr {
		return b.entries[i]
	}
	return nil
}

// Read dispatches a read at addr. It reports false when nothing is mapped
// there; the caller then answers as unmapped hardware does (all ones).
func (b *Bus) Read(addr uint64, data []byte) bool {
	e := b.find(addr)
	if e == nil {
		return false
	}
	e.accesses.Add(1)
	e.dev.Read(addr-e.base, data)
	return true
}

// Write dispatches a write at addr; false when nothing is mapped there.
func (b *Bus) Write(addr uint64, data []byte) bool {
	e := b.find(addr)
	if e == nil {
		return false
	}
	e.accesses.Add(1)
	e.dev.Write(addr-e.base, data)
	return true
}

// RangeStats is one mapped range and how often the guest touched it.
type RangeStats struct {
	Name     string `json:"name"`
	Base     uint64 `json:"base"`
	Size     uint64 `json:"size"`
	Accesses uint64 `json:"accesses"`
}

// Stats lists every mapped range with its access count, in address order.
func (b *Bus) Stats() []RangeStats {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]RangeStats, 0, len(b.entries))
	for _, e := range b.entries {
		out = append(out, RangeStats{Name: e.name, Base: e.base, Size: e.size, Accesses: e.accesses.Load()})
	}
	return out
}
