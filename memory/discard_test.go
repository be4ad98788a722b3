package memory

import (
	"errors"
	"testing"
)

// TestDiscard: Discard gives whole pages back to the host (mincore sees
// them go) and they read as zero and work again; misaligned or non-RAM
// ranges are refused without touching anything.
func TestDiscard(t *testing.T) {
	g, err := New(8<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if r, err := g.Resident(0, 8<<20); err != nil || r != 0 {
		t.Fatalf("fresh RAM: %d bytes resident (%v), want 0", r, err)
	}
	for gpa := uint64(1 << 20); gpa < 3<<20; gpa += 4096 {
		if err := g.WriteU64(gpa, 0xfeedface); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := g.Resident(1<<20, 2<<20); r != 2<<20 {
		t.Fatalf("written 2 MiB: %d bytes resident", r)
	}
	if err := g.Discard(1<<20+4096, 1<<20); err != nil {
		t.Fatal(err)
	}
	if r, _ := g.Resident(1<<20, 2<<20); r != 1<<20 {
		t.Errorf("after discarding 1 MiB of 2: %d bytes resident, want %d", r, 1<<20)
	}
	if v, _ := g.ReadU64(1<<20 + 4096); v != 0 {
		t.Errorf("discarded page reads %#x, want 0", v)
	}
	if v, _ := g.ReadU64(1 << 20); v != 0xfeedface {
		t.Errorf("the page before the range lost its data: %#x", v)
	}
	if err := g.WriteU64(1<<20+4096, 5); err != nil {
		t.Fatal(err)
	}
	if v, _ := g.ReadU64(1<<20 + 4096); v != 5 {
		t.Errorf("discarded page does not take a write: %#x", v)
	}
	for _, tc := range []struct {
		gpa, n uint64
		notRAM bool
	}{
		{1<<20 + 1, 4096, false}, {1 << 20, 100, false}, {8 << 20, 4096, true}, {8<<20 - 4096, 8192, true},
	} {
		err := g.Discard(tc.gpa, tc.n)
		if err == nil || errors.Is(err, ErrOutOfRange) != tc.notRAM {
			t.Errorf("Discard(%#x, %#x) = %v", tc.gpa, tc.n, err)
		}
	}
	if v, _ := g.ReadU64(1 << 20); v != 0xfeedface {
		t.Errorf("a refused Discard touched memory: %#x", v)
	}
	if err := g.Discard(4096, 0); err != nil {
		t.Errorf("empty Discard: %v", err)
	}
	if _, err := g.Resident(100, 4096); err == nil {
		t.Error("Resident of a misaligned range accepted")
	}
}
