package pci

import (
	"encoding/binary"
	"sync"
	"testing"
)

// TestConcurrentAccess runs what several vCPUs and a device backend do at
// once: configuration cycles through both mechanisms (including BAR moves
// and MSI-X control), MMIO to the BARs and the MSI-X table, Notify and
// SetINTx from the device side, and dumps from the API. Run with -race.
func TestConcurrentAccess(t *testing.T) {
	r := newRig(t)
	f0, f1, _, _, _ := buildTopology(t, r)
	if err := r.root.Enumerate(); err != nil {
		t.Fatal(err)
	}
	table, _ := r.root.BARAddress(f1, 1)
	const n = 300
	var wg sync.WaitGroup
	run := func(fn func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				fn(i)
			}
		}()
	}
	run(func(i int) { r.cfRead(1, 0, 0, (i%64)*4, 4) })
	run(func(i int) { r.ecamRead(2, 3, 0, (i%64)*4, 4) })
	run(func(i int) {
		// Move BAR 0 of 00:01.0 back and forth.
		r.ecamWrite(0, 1, 0, RegBAR0, 4, uint32(0xC8000000+(i%2)*0x10000))
	})
	run(func(i int) {
		r.cfWrite(1, 0, 0, f1.cfg.msixCap+2, 2, uint32(msixCtlEnable)*uint32(i%2))
	})
	run(func(i int) {
		b := make([]byte, 4)
		binary.LittleEndian.PutUint32(b, uint32(i%2))
		r.mmio.Write(table+uint64(i%4)*16+12, b)
		r.mmio.Read(table+0x800, make([]byte, 8))
	})
	run(func(i int) {
		_ = f1.msix.Notify(uint16(i % 4))
		f0.cfg.SetINTx(i%2 == 0)
		_ = f1.cfg.BusMaster()
	})
	run(func(i int) {
		if i%30 == 0 {
			var b discard
			_ = r.root.Dump(&b, false)
		}
		r.mmio.Read(0xC8000000, make([]byte, 4))
	})
	wg.Wait()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
