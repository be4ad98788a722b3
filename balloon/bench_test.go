package balloon

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/kvmm/kvmm/memory"
)

// Reclaim benchmarks (BENCHMARKS.md): how fast guest memory goes back to
// the host through the VMware balloon path: the batch read out of guest
// RAM, the ledger, madvise(MADV_DONTNEED) and the statuses written back.
// The guest RAM is a real anonymous mapping (memory.New), touched before
// every round so each discard frees resident pages; no KVM is involved,
// and none is needed: the balloon never enters KVM, the MMU notifier that
// drops the guest's mappings runs inside madvise either way.
//
//	go test -run XXX -bench Reclaim -benchtime 5x ./balloon/

const (
	reclaimBytes = 1 << 30         // the ballooned range
	reclaimBase  = uint64(2 << 20) // above the batch page's 2 MiB block
)

func BenchmarkReclaimVMware2M(b *testing.B) { benchReclaim(b, Page2M) }
func BenchmarkReclaimVMware4K(b *testing.B) { benchReclaim(b, Page4K) }

func benchReclaim(b *testing.B, size PageSize) {
	mem, err := memory.New(reclaimBase+reclaimBytes, memory.Options{})
	if err != nil {
		b.Skipf("cannot map %d MiB of guest RAM: %v", (reclaimBase+reclaimBytes)>>20, err)
	}
	defer mem.Close()
	l := NewLedger(mem, VMwareCommands, quietLog())
	v := NewVMware(l, mem, quietLog())
	if r := call(v, CmdStart, 0x3e, 0); r.RAX != StatusSuccessWithCaps {
		b.Fatalf("START: %#x", r.RAX)
	}
	const batch = 0x1000
	lockCmd, unlockCmd := uint64(CmdBatchedLock), uint64(CmdBatchedUnlock)
	if size == Page2M {
		lockCmd, unlockCmd = CmdBatched2MLock, CmdBatched2MUnlock
	}
	pages := reclaimBytes / uint64(size)
	// run sends the whole range in batches of BatchMax, as the driver does.
	run := func(cmd uint64) {
		var entries [8 * BatchMax]byte
		for first := uint64(0); first < pages; first += uint64(BatchMax) {
			n := min(uint64(BatchMax), pages-first)
			for i := range n {
				binary.LittleEndian.PutUint64(entries[i*8:], reclaimBase+(first+i)*uint64(size))
			}
			if err := mem.Write(batch, entries[:n*8]); err != nil {
				b.Fatal(err)
			}
			if r := call(v, cmd, batch>>12, n); r.RAX != StatusSuccess {
				b.Fatalf("command %d: status %d", cmd, r.RAX)
			}
		}
	}
	ram, err := mem.Slice(reclaimBase, reclaimBytes)
	if err != nil {
		b.Fatal(err)
	}
	touch := func() {
		for off := 0; off < len(ram); off += int(Page4K) {
			ram[off] = 1
		}
	}
	b.SetBytes(reclaimBytes)
	var spent time.Duration
	first := true
	for b.Loop() {
		b.StopTimer()
		touch()
		before, _ := mem.Resident(reclaimBase, reclaimBytes)
		b.StartTimer()
		start := time.Now()
		run(lockCmd)
		spent += time.Since(start)
		b.StopTimer()
		if first {
			after, _ := mem.Resident(reclaimBase, reclaimBytes)
			b.Logf("%s pages: resident %d MiB before, %d MiB after", size, before>>20, after>>20)
			if after != 0 || before != reclaimBytes {
				b.Fatalf("resident %d bytes before the lock and %d after, want %d and 0", before, after, reclaimBytes)
			}
			first = false
		}
		run(unlockCmd)
		b.StartTimer()
	}
	if spent > 0 {
		b.ReportMetric(float64(b.N)*reclaimBytes/(1<<30)/spent.Seconds(), "GiB/s")
	}
	if st := l.Stats(); st.ReturnedBytes != uint64(b.N)*reclaimBytes {
		b.Errorf("returned %d bytes over %d rounds", st.ReturnedBytes, b.N)
	}
}
