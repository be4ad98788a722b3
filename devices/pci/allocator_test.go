package pci

import (
	"errors"
	"testing"
)

func TestAddressSpace(t *testing.T) {
	s, err := NewAddressSpace("t", Range{0x1000, 0x8FFF})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		size, align, want uint64
		fail              bool
	}{
		{0x1000, 0x1000, 0x1000, false},
		{0x2000, 0x2000, 0x2000, false},
		{0x1000, 0x1000, 0x4000, false},
		{0x1000, 0x4000, 0x8000, false}, // 0x5000 is free but not aligned
		{0x4000, 0x1000, 0, true},       // 0x5000-0x7FFF is only 12 KiB
		{0x3000, 0x1000, 0x5000, false},
		{0x1000, 0x1000, 0, true},
	}
	for i, st := range steps {
		got, err := s.Allocate(st.size, st.align)
		if st.fail {
			if !errors.Is(err, ErrExhausted) {
				t.Errorf("step %d: got %#x %v, want ErrExhausted", i, got, err)
			}
			continue
		}
		if err != nil || got != st.want {
			t.Errorf("step %d: Allocate(%#x, %#x) = %#x %v, want %#x", i, st.size, st.align, got, err, st.want)
		}
	}
	if err := s.Free(0x2000); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Allocate(0x2000, 0x1000); err != nil || got != 0x2000 {
		t.Errorf("reuse after free: %#x %v", got, err)
	}
	if err := s.Free(0x2100); err == nil {
		t.Error("freeing an unallocated base accepted")
	}
	if err := s.AllocateAt(0x2000, 0x100); err == nil {
		t.Error("AllocateAt over an allocation accepted")
	}
	if err := s.AllocateAt(0x9000, 0x100); err == nil {
		t.Error("AllocateAt outside the window accepted")
	}
	if _, err := s.Allocate(0x1000, 0x300); err == nil {
		t.Error("non-power-of-two alignment accepted")
	}
	if _, err := s.Allocate(0, 1); err == nil {
		t.Error("zero size accepted")
	}
	used := s.Used()
	for i := 1; i < len(used); i++ {
		if used[i].Start <= used[i-1].End {
			t.Errorf("allocations overlap or unsorted: %v", used)
		}
	}
}

func TestAddressSpaceTopOfRange(t *testing.T) {
	s, _ := NewAddressSpace("top", Range{0xFFFFFFFFFFFFF000, ^uint64(0)})
	if got, err := s.Allocate(0x1000, 0x1000); err != nil || got != 0xFFFFFFFFFFFFF000 {
		t.Errorf("last page: %#x %v", got, err)
	}
	if _, err := s.Allocate(0x10, 0x10); !errors.Is(err, ErrExhausted) {
		t.Errorf("full space: %v", err)
	}
	s2, _ := NewAddressSpace("wrap", Range{0xFFFFFFFFFFFFF800, ^uint64(0)})
	if _, err := s2.Allocate(0x1000, 0x1000); !errors.Is(err, ErrExhausted) {
		t.Errorf("aligning past the end wrapped: %v", err)
	}
}

func TestIDAllocator(t *testing.T) {
	a, err := NewIDAllocator("gsi", 24, 26)
	if err != nil {
		t.Fatal(err)
	}
	for want := uint32(24); want <= 26; want++ {
		if got, err := a.Alloc(); err != nil || got != want {
			t.Errorf("Alloc = %d %v, want %d", got, err, want)
		}
	}
	if _, err := a.Alloc(); !errors.Is(err, ErrExhausted) {
		t.Errorf("exhausted: %v", err)
	}
	if err := a.Free(25); err != nil {
		t.Fatal(err)
	}
	if err := a.Free(25); err == nil {
		t.Error("double free accepted")
	}
	if got, _ := a.Alloc(); got != 25 {
		t.Errorf("lowest free = %d, want 25", got)
	}
	if err := a.AllocAt(23); err == nil {
		t.Error("AllocAt below the range accepted")
	}
	if _, err := NewIDAllocator("x", 5, 4); err == nil {
		t.Error("empty range accepted")
	}
	if a.InUse() != 3 {
		t.Errorf("InUse %d", a.InUse())
	}
}

func TestNewAllocator(t *testing.T) {
	a := testAllocator(t, false)
	if a.MMIO64 != nil {
		t.Error("MMIO64 without a window")
	}
	if _, err := NewAllocator(AllocatorConfig{MMIO32: Range{2, 1}, IO: Range{0, 1}, GSIFirst: 1, GSILast: 2}); err == nil {
		t.Error("empty MMIO32 accepted")
	}
}
