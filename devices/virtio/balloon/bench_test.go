package balloon

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

// BenchmarkReclaimVirtio (BENCHMARKS.md): how fast guest memory goes back
// to the host through the virtio-balloon inflate path, driven as Linux's
// fill_balloon drives it: arrays of 256 PFNs, one buffer per kick, waiting
// for each to be used (tell_host, whose wait_event sleeps). Measured: the notification (an eventfd,
// as KVM's ioeventfd signals it), the device worker's pop, the PFN array
// read out of guest RAM, the ledger, madvise(MADV_DONTNEED) per 4 KiB page
// and the used-ring update the driver polls. Guest RAM is a real anonymous
// mapping (memory.New), touched before every round so that each discard
// frees resident pages; no KVM is involved (the MMU notifier that drops
// the guest's mappings runs inside madvise either way).
//
//	go test -run XXX -bench ReclaimVirtio -benchtime 5x ./devices/virtio/balloon/
func BenchmarkReclaimVirtio(b *testing.B) {
	const (
		base   = 16 << 20 // above the harness's rings and buffers
		size   = 1 << 30
		perBuf = 256 // VIRTIO_BALLOON_ARRAY_PFNS_MAX
	)
	r := newRig(b, base+size)
	d := r.initDriver(b, allFeatures, linuxStats(8<<20, 1))
	arr := r.Alloc(4*perBuf, 4096)
	ram, err := r.Mem.Slice(base, size)
	if err != nil {
		b.Fatal(err)
	}
	var pfns [4 * perBuf]byte
	// run sends the whole range on q, perBuf PFNs a buffer.
	run := func(q *virtiotest.DriverQueue) {
		for first := uint32(base >> PFNShift); first < (base+size)>>PFNShift; first += perBuf {
			for i := range uint32(perBuf) {
				binary.LittleEndian.PutUint32(pfns[4*i:], first+i)
			}
			if err := r.Mem.Write(arr, pfns[:]); err != nil {
				b.Fatal(err)
			}
			head := q.AddAndPublish(virtiotest.Buf{Addr: arr, Len: 4 * perBuf})
			r.Notify(q.Index)
			// Wait as a halted vCPU would, without spinning: on a small
			// host a spinning driver takes the CPU the device needs.
			for deadline := time.Now().Add(waitTime); ; time.Sleep(20 * time.Microsecond) {
				if id, _, ok := q.NextUsed(); ok {
					if id != head {
						b.Fatalf("used head %d, want %d", id, head)
					}
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("buffer not used; status %#x", r.Status())
				}
			}
		}
	}
	b.SetBytes(size)
	var spent time.Duration
	first := true
	for b.Loop() {
		b.StopTimer()
		for off := 0; off < len(ram); off += 4096 {
			ram[off] = 1
		}
		before := r.resident(b, base, size)
		b.StartTimer()
		start := time.Now()
		run(d.inflate)
		spent += time.Since(start)
		b.StopTimer()
		if first {
			after := r.resident(b, base, size)
			b.Logf("resident %d MiB before inflating, %d MiB after", before>>20, after>>20)
			if before != size || after != 0 {
				b.Fatalf("resident %d bytes before and %d after, want %d and 0", before, after, size)
			}
			first = false
		}
		run(d.deflate)
		b.StartTimer()
	}
	if spent > 0 {
		b.ReportMetric(float64(b.N)*size/(1<<30)/spent.Seconds(), "GiB/s")
	}
	if st := r.ledger.Stats(); st.ReturnedBytes != uint64(b.N)*size || st.HeldBytes != 0 {
		b.Errorf("returned %d bytes over %d rounds, %d held at the end", st.ReturnedBytes, b.N, st.HeldBytes)
	}
}
