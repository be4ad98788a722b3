package balloon

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/kvmm/kvmm/memory"
)

func TestLedgerInflateDeflate(t *testing.T) {
	mem := newFakeMemory(8<<20, 4<<20) // RAM: [0, 8M) and [16M, 20M)
	l := NewLedger(mem, nil, quietLog())
	const M = 1 << 20
	steps := []struct {
		op   string // "in" or "out"
		gpa  uint64
		size PageSize
		want error
	}{
		{"in", 0x5000, Page4K, nil},
		{"in", 0x5000, Page4K, ErrHeld},
		{"in", 0x5001, Page4K, ErrMisaligned},
		{"in", 8 * M, Page4K, ErrNotRAM},      // the hole
		{"in", 20*M - 4096, Page4K, nil},      // last page of RAM
		{"in", 20 * M, Page4K, ErrNotRAM},     // just past RAM
		{"in", 2 * M, Page2M, nil},            // a whole block
		{"in", 2*M + 0x3000, Page4K, ErrHeld}, // inside the 2M page
		{"in", 0, Page2M, ErrHeld},            // overlaps the 4K page at 0x5000
		{"in", 3 * M, Page2M, ErrMisaligned},  // 1 MiB aligned only
		{"in", 16 * M, Page2M, nil},           // high region
		{"in", ^uint64(0) &^ 0xfff, Page4K, ErrNotRAM},
		{"in", 0x9000, PageSize(8192), ErrPageSize},
		{"out", 2*M + 0x3000, Page4K, ErrNotHeld}, // part of a 2M page
		{"out", 0x5000, Page2M, ErrMisaligned},
		{"out", 0x6000, Page4K, ErrNotHeld},
		{"out", 0x5000, Page4K, nil},
		{"out", 0x5000, Page4K, ErrNotHeld},
		{"out", 2 * M, Page2M, nil},
		{"in", 2*M + 0x3000, Page4K, nil}, // the block is free again
		{"in", 0, Page2M, nil},            // and so is block 0
	}
	for i, s := range steps {
		var err error
		if s.op == "in" {
			err = l.Inflate(s.gpa, s.size)
		} else {
			err = l.Deflate(s.gpa, s.size)
		}
		if !errors.Is(err, s.want) || (s.want == nil) != (err == nil) {
			t.Errorf("step %d: %s %s %#x: err %v, want %v", i, s.op, s.size, s.gpa, err, s.want)
		}
		checkInvariants(t, l)
	}
	st := l.Stats()
	// Held: 20M-4K (4K), 2M+0x3000 (4K), 16M (2M), 0 (2M).
	if st.Held4K != 2 || st.Held2M != 2 {
		t.Errorf("held %d 4K and %d 2M pages, want 2 and 2", st.Held4K, st.Held2M)
	}
	// Discarded: 0x5000, 20M-4K, 2M (2M), 16M (2M), 2M+0x3000, 0 (2M).
	want := uint64(3*4096 + 3*(2<<20))
	if st.ReturnedBytes != want || mem.discarded != want {
		t.Errorf("returned %d bytes (memory saw %d), want %d", st.ReturnedBytes, mem.discarded, want)
	}
	for kind, n := range map[string]uint64{"page_already_held": 3, "page_misaligned": 3, "page_not_ram": 3,
		"page_not_held": 3, "command_invalid": 1} {
		if st.Errors[kind] != n {
			t.Errorf("errors[%s] = %d, want %d (all: %v)", kind, st.Errors[kind], n, st.Errors)
		}
	}
	l.Reset()
	checkInvariants(t, l)
	if st := l.Stats(); st.HeldBytes != 0 || st.ReturnedBytes != want {
		t.Errorf("after Reset: held %d, returned %d", st.HeldBytes, st.ReturnedBytes)
	}
	if err := l.Inflate(0x5000, Page4K); err != nil {
		t.Errorf("inflate after Reset: %v", err)
	}
}

func TestLedgerDiscardFailureKeepsThePage(t *testing.T) {
	mem := newFakeMemory(4 << 20)
	mem.failAt = 0x3000
	l := NewLedger(mem, nil, quietLog())
	if err := l.Inflate(0x3000, Page4K); err != nil {
		t.Fatalf("inflate: %v", err)
	}
	st := l.Stats()
	if st.Held4K != 1 || st.ReturnedBytes != 0 || st.Errors["discard_failed"] != 1 {
		t.Errorf("after a failed discard: %+v", st)
	}
	if !l.Holds(0x3000, Page4K) {
		t.Error("page not held after a failed discard")
	}
}

func TestSetTarget(t *testing.T) {
	l := NewLedger(newFakeMemory(8<<20), nil, quietLog())
	for _, tc := range []struct {
		bytes   uint64
		mention string // "" = accepted
	}{
		{0, ""}, {4096, ""}, {8 << 20, ""}, {4097, "4 KiB"}, {8<<20 + 4096, "more than the guest's 8 MiB"},
	} {
		err := l.SetTarget(tc.bytes)
		switch {
		case tc.mention == "" && err != nil:
			t.Errorf("SetTarget(%d): %v", tc.bytes, err)
		case tc.mention != "" && (!errors.Is(err, ErrTarget) || !strings.Contains(err.Error(), tc.mention)):
			t.Errorf("SetTarget(%d): %v, want an ErrTarget mentioning %q", tc.bytes, err, tc.mention)
		case tc.mention == "" && l.Target() != tc.bytes:
			t.Errorf("SetTarget(%d): target %d", tc.bytes, l.Target())
		}
	}
	if l.Target() != 8<<20 {
		t.Errorf("a refused target changed it: %d", l.Target())
	}
}

// TestLedgerReclaimsHostMemory uses real guest RAM (an anonymous mapping,
// no KVM needed): inflating gives the host memory back, as mincore sees
// it, and a page taken back reads as zero.
func TestLedgerReclaimsHostMemory(t *testing.T) {
	mem, err := memory.New(16<<20, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	l := NewLedger(mem, nil, quietLog())
	const base, n = 4 << 20, 4 << 20 // two 2M pages' worth
	fill := make([]byte, n)
	for i := range fill {
		fill[i] = 0xa5
	}
	if err := mem.Write(base, fill); err != nil {
		t.Fatal(err)
	}
	before, err := mem.Resident(base, n)
	if err != nil {
		t.Fatal(err)
	}
	if before != n {
		t.Fatalf("written range: %d bytes resident, want %d", before, n)
	}
	if err := l.Inflate(base, Page2M); err != nil {
		t.Fatal(err)
	}
	for gpa := uint64(base + 2<<20); gpa < base+n; gpa += 4096 {
		if err := l.Inflate(gpa, Page4K); err != nil {
			t.Fatal(err)
		}
	}
	after, err := mem.Resident(base, n)
	if err != nil {
		t.Fatal(err)
	}
	if after != 0 {
		t.Errorf("after inflating: %d bytes still resident", after)
	}
	if st := l.Stats(); st.ReturnedBytes != n || st.HeldBytes != n {
		t.Errorf("stats: returned %d held %d, want %d", st.ReturnedBytes, st.HeldBytes, n)
	}
	t.Logf("resident before %d KiB, after %d KiB", before>>10, after>>10)
	if err := l.Deflate(base, Page2M); err != nil {
		t.Fatal(err)
	}
	v, err := mem.ReadU64(base + 0x1238)
	if err != nil || v != 0 {
		t.Errorf("page taken back reads %#x (%v), want 0", v, err)
	}
	if err := mem.WriteU64(base+0x1238, 7); err != nil {
		t.Fatal(err)
	}
	if v, _ := mem.ReadU64(base + 0x1238); v != 7 {
		t.Errorf("page taken back does not keep a write: %#x", v)
	}
}

// TestLedgerConcurrent: vCPU-like goroutines inflate and deflate while
// others set the target and read stats (run with -race).
func TestLedgerConcurrent(t *testing.T) {
	mem := newFakeMemory(8 << 20)
	l := NewLedger(mem, []string{"x"}, quietLog())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				gpa := uint64((i*7+w*13)%2048) * 4096
				if i%3 == 0 {
					_ = l.Deflate(gpa, Page4K)
				} else {
					_ = l.Inflate(gpa, Page4K)
				}
				l.CountCommand(0)
			}
		})
	}
	wg.Go(func() {
		for i := range 2000 {
			_ = l.SetTarget(uint64(i%2048) * 4096)
			_ = l.Stats()
		}
	})
	wg.Wait()
	checkInvariants(t, l)
	if got := l.Stats().Commands["x"]; got != 8000 {
		t.Errorf("commands counted %d, want 8000", got)
	}
}
