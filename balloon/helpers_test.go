package balloon

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
)

// fakeMemory is guest RAM in Go slices, laid out like kvmm's: regions with
// a hole between them. Discard zeroes the range and remembers it, so tests
// can check what was given back without the host kernel.
type fakeMemory struct {
	mu        sync.Mutex
	regions   []fakeRegion
	discarded uint64 // bytes, all calls
	failAt    uint64 // Discard of a range containing this GPA fails (0: never)
}

type fakeRegion struct {
	gpa  uint64
	data []byte
}

// newFakeMemory makes RAM of the given region sizes, each region starting
// 16 MiB after the previous one's start (so regions of less than 16 MiB
// leave a hole).
func newFakeMemory(sizes ...uint64) *fakeMemory {
	m := &fakeMemory{}
	for i, n := range sizes {
		m.regions = append(m.regions, fakeRegion{gpa: uint64(i) * 16 << 20, data: make([]byte, n)})
	}
	return m
}

func (m *fakeMemory) slice(gpa, n uint64) ([]byte, bool) {
	for _, r := range m.regions {
		end := r.gpa + uint64(len(r.data))
		if gpa >= r.gpa && gpa < end && n <= end-gpa {
			return r.data[gpa-r.gpa : gpa-r.gpa+n], true
		}
	}
	return nil, false
}

func (m *fakeMemory) Contains(gpa, n uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.slice(gpa, n)
	return ok
}

func (m *fakeMemory) Read(gpa uint64, b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.slice(gpa, uint64(len(b)))
	if !ok {
		return fmt.Errorf("read [%#x, +%#x): not RAM", gpa, len(b))
	}
	copy(b, s)
	return nil
}

func (m *fakeMemory) Write(gpa uint64, b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.slice(gpa, uint64(len(b)))
	if !ok {
		return fmt.Errorf("write [%#x, +%#x): not RAM", gpa, len(b))
	}
	copy(s, b)
	return nil
}

func (m *fakeMemory) Discard(gpa, n uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.slice(gpa, n)
	if !ok || gpa%uint64(Page4K) != 0 || n%uint64(Page4K) != 0 {
		return fmt.Errorf("discard [%#x, +%#x): bad range", gpa, n)
	}
	if m.failAt != 0 && m.failAt >= gpa && m.failAt < gpa+n {
		return fmt.Errorf("discard [%#x, +%#x): injected failure", gpa, n)
	}
	clear(s)
	m.discarded += n
	return nil
}

func (m *fakeMemory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += uint64(len(r.data))
	}
	return n
}

func (m *fakeMemory) u64(t testing.TB, gpa uint64) uint64 {
	t.Helper()
	var b [8]byte
	if err := m.Read(gpa, b[:]); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

func (m *fakeMemory) putU64(t testing.TB, gpa, v uint64) {
	t.Helper()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	if err := m.Write(gpa, b[:]); err != nil {
		t.Fatal(err)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestVMware is a negotiated VMware balloon (all host capabilities) over
// two regions: 8 MiB at 0 and 4 MiB at 16 MiB.
func newTestVMware(t testing.TB) (*VMware, *fakeMemory) {
	t.Helper()
	mem := newFakeMemory(8<<20, 4<<20)
	v := NewVMware(NewLedger(mem, VMwareCommands, quietLog()), mem, quietLog())
	r := call(v, CmdStart, 0x3e, 0)
	if r.RAX != StatusSuccessWithCaps || r.RCX != HostCaps {
		t.Fatalf("START: status %#x caps %#x", r.RAX, r.RCX)
	}
	return v, mem
}

// call makes one balloon call as vmw_balloon's __vmballoon_cmd does.
func call(v *VMware, cmd, arg1, arg2 uint64) Regs {
	r := Regs{RAX: BalloonMagic, RCX: cmd, RDX: BalloonPort, RBX: arg1, RSI: arg2}
	v.Serve(&r)
	return r
}

// batchGPA is where the tests keep their batch page.
const batchGPA = 0x1000

// writeBatch puts entries (page addresses) into the batch page.
func writeBatch(t testing.TB, mem *fakeMemory, addrs ...uint64) {
	t.Helper()
	for i, a := range addrs {
		mem.putU64(t, batchGPA+uint64(i)*8, a)
	}
}

// statuses reads the per-entry statuses back.
func statuses(t testing.TB, mem *fakeMemory, n int) []uint64 {
	t.Helper()
	out := make([]uint64, n)
	for i := range out {
		out[i] = mem.u64(t, batchGPA+uint64(i)*8) & entryStatusMask
	}
	return out
}

// checkInvariants: every held page is RAM and aligned, the counters match
// the held set, and pages do not overlap.
func checkInvariants(t testing.TB, l *Ledger) {
	t.Helper()
	var n4, n2 uint64
	blocks := map[uint64]PageSize{}
	l.forEach(func(gpa uint64, size PageSize) {
		if gpa%uint64(size) != 0 || !l.mem.Contains(gpa, uint64(size)) {
			t.Errorf("held %s page %#x is not aligned RAM", size, gpa)
		}
		block := gpa / uint64(Page2M)
		if size == Page2M {
			n2++
			if _, dup := blocks[block]; dup {
				t.Errorf("2M page %#x overlaps other held pages", gpa)
			}
		} else {
			n4++
			if blocks[block] == Page2M {
				t.Errorf("4K page %#x inside a held 2M page", gpa)
			}
		}
		if blocks[block] != Page2M {
			blocks[block] = size
		}
	})
	s := l.Stats()
	if s.Held4K != n4 || s.Held2M != n2 || s.HeldBytes != n4*uint64(Page4K)+n2*uint64(Page2M) {
		t.Errorf("stats say %d 4K + %d 2M pages (%d bytes), the set has %d + %d", s.Held4K, s.Held2M, s.HeldBytes, n4, n2)
	}
}
