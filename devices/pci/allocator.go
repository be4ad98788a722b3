package pci

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"sync"
)

// ErrExhausted reports that an allocator has no room left for a request.
var ErrExhausted = errors.New("resource exhausted")

// Allocator hands out the VM's device resources, so that no device
// hard-codes an address or an interrupt number (Cloud Hypervisor's
// vm-allocator): guest-physical MMIO below and above 4 GiB, I/O ports, and
// GSIs for MSI routes. Slots are allocated per bus by each Bus with an
// IDAllocator of its own.
type Allocator struct {
	// MMIO32 is the window below 4 GiB for 32-bit memory BARs.
	MMIO32 *AddressSpace
	// MMIO64 is the window above RAM for 64-bit prefetchable BARs; nil when
	// the VM has none (those BARs then go to MMIO32).
	MMIO64 *AddressSpace
	// IO is the I/O port range for I/O BARs.
	IO *AddressSpace
	// GSI numbers MSI routes; GSIs below it belong to the IOAPIC pins.
	GSI *IDAllocator
}

// Range is an inclusive address range [Start, End].
type Range struct{ Start, End uint64 }

// Size is the number of addresses in r (0 for an empty range).
func (r Range) Size() uint64 {
	if r.End < r.Start {
		return 0
	}
	return r.End - r.Start + 1
}

// Contains reports whether [base, base+size) lies inside r.
func (r Range) Contains(base, size uint64) bool {
	return size > 0 && base >= r.Start && base+size-1 >= base && base+size-1 <= r.End
}

// AllocatorConfig sizes an Allocator.
type AllocatorConfig struct {
	MMIO32 Range
	MMIO64 Range // End == 0: no 64-bit window
	IO     Range
	// GSIFirst..GSILast are the GSIs MSI routes may use.
	GSIFirst, GSILast uint32
}

// NewAllocator builds the pools of cfg.
func NewAllocator(cfg AllocatorConfig) (*Allocator, error) {
	a := &Allocator{}
	var err error
	if a.MMIO32, err = NewAddressSpace("mmio32", cfg.MMIO32); err != nil {
		return nil, err
	}
	if cfg.MMIO64.End != 0 {
		if a.MMIO64, err = NewAddressSpace("mmio64", cfg.MMIO64); err != nil {
			return nil, err
		}
	}
	if a.IO, err = NewAddressSpace("io", cfg.IO); err != nil {
		return nil, err
	}
	if a.GSI, err = NewIDAllocator("gsi", cfg.GSIFirst, cfg.GSILast); err != nil {
		return nil, err
	}
	return a, nil
}

// AddressSpace allocates aligned, non-overlapping ranges from one window.
type AddressSpace struct {
	name   string
	window Range
	mu     sync.Mutex
	used   []Range // sorted by Start, non-overlapping
}

// NewAddressSpace returns an empty allocator over window.
func NewAddressSpace(name string, window Range) (*AddressSpace, error) {
	if window.End < window.Start {
		return nil, fmt.Errorf("%s window [%#x, %#x] is empty", name, window.Start, window.End)
	}
	return &AddressSpace{name: name, window: window}, nil
}

// Window is the range the space allocates from.
func (s *AddressSpace) Window() Range { return s.window }

// Allocate returns the lowest base, a multiple of align (a power of two),
// where size bytes are free.
func (s *AddressSpace) Allocate(size, align uint64) (uint64, error) {
	if size == 0 || align == 0 || bits.OnesCount64(align) != 1 {
		return 0, fmt.Errorf("%s: allocate size %#x align %#x: size must be nonzero and align a power of two", s.name, size, align)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cand := alignUp(s.window.Start, align)
	ok := cand >= s.window.Start
	// after moves cand past u; false when no address is left above u.
	after := func(u Range) bool {
		if u.End == ^uint64(0) {
			return false
		}
		n := alignUp(u.End+1, align)
		cand = max(cand, n)
		return n > u.End
	}
	for i := 0; ok && i <= len(s.used); i++ {
		gapEnd := s.window.End
		if i < len(s.used) {
			u := s.used[i]
			if u.End < cand {
				continue
			}
			if u.Start <= cand {
				ok = after(u)
				continue
			}
			gapEnd = min(u.Start-1, gapEnd)
		}
		if cand <= gapEnd && gapEnd-cand >= size-1 {
			s.insert(Range{cand, cand + size - 1})
			return cand, nil
		}
		if i < len(s.used) {
			ok = after(s.used[i])
		}
	}
	return 0, fmt.Errorf("%s: no %#x bytes aligned to %#x free in [%#x, %#x]: %w", s.name, size, align, s.window.Start, s.window.End, ErrExhausted)
}

// AllocateAt reserves [base, base+size).
func (s *AddressSpace) AllocateAt(base, size uint64) error {
	if !s.window.Contains(base, size) {
		return fmt.Errorf("%s: [%#x, +%#x) is outside [%#x, %#x]", s.name, base, size, s.window.Start, s.window.End)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	end := base + size - 1
	for _, u := range s.used {
		if base <= u.End && u.Start <= end {
			return fmt.Errorf("%s: [%#x, +%#x) overlaps [%#x, %#x]: %w", s.name, base, size, u.Start, u.End, ErrExhausted)
		}
	}
	s.insert(Range{base, end})
	return nil
}

// Free releases the allocation that starts at base.
func (s *AddressSpace) Free(base uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, u := range s.used {
		if u.Start == base {
			s.used = append(s.used[:i], s.used[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("%s: nothing allocated at %#x", s.name, base)
}

// Used lists the allocations in address order.
func (s *AddressSpace) Used() []Range {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Range(nil), s.used...)
}

func (s *AddressSpace) insert(r Range) {
	i := sort.Search(len(s.used), func(i int) bool { return s.used[i].Start > r.Start })
	s.used = append(s.used, Range{})
	copy(s.used[i+1:], s.used[i:])
	s.used[i] = r
}

// alignUp rounds v up to a multiple of align (a power of two); it wraps to
// a value below v on overflow, which callers check.
func alignUp(v, align uint64) uint64 { return (v + align - 1) &^ (align - 1) }

// IDAllocator hands out small integers (GSIs, slot numbers) from
// [first, last], lowest free first.
type IDAllocator struct {
	name        string
	first, last uint32
	mu          sync.Mutex
	used        map[uint32]bool
}

// NewIDAllocator returns an allocator of first..last.
func NewIDAllocator(name string, first, last uint32) (*IDAllocator, error) {
	if last < first {
		return nil, fmt.Errorf("%s: empty range %d..%d", name, first, last)
	}
	return &IDAllocator{name: name, first: first, last: last, used: map[uint32]bool{}}, nil
}

// Alloc returns the lowest free ID.
func (a *IDAllocator) Alloc() (uint32, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id := a.first; ; id++ {
		if !a.used[id] {
			a.used[id] = true
			return id, nil
		}
		if id == a.last {
			return 0, fmt.Errorf("%s: all of %d..%d in use: %w", a.name, a.first, a.last, ErrExhausted)
		}
	}
}

// AllocAt reserves id.
func (a *IDAllocator) AllocAt(id uint32) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id < a.first || id > a.last {
		return fmt.Errorf("%s: %d is outside %d..%d", a.name, id, a.first, a.last)
	}
	if a.used[id] {
		return fmt.Errorf("%s: %d already in use: %w", a.name, id, ErrExhausted)
	}
	a.used[id] = true
	return nil
}

// Free releases id; freeing a free ID is an error.
func (a *IDAllocator) Free(id uint32) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.used[id] {
		return fmt.Errorf("%s: %d is not allocated", a.name, id)
	}
	delete(a.used, id)
	return nil
}

// InUse is the number of allocated IDs.
func (a *IDAllocator) InUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.used)
}
