package devices_test

import (
	"testing"

	"github.com/kvmm/kvmm/devices"
)

// nopDevice answers every access without doing anything, so the benchmarks
// measure the bus alone.
type nopDevice struct{}

func (nopDevice) Read(uint64, []byte)  {}
func (nopDevice) Write(uint64, []byte) {}

// kvmmPIOBus is the port map vmm builds for every VM (vmm/machine.go
// addDevices): the lookups a real exit does.
func kvmmPIOBus(b *testing.B) *devices.Bus {
	b.Helper()
	bus := devices.NewBus("pio")
	for _, r := range []struct{ base, size uint64 }{
		{0x3F8, 8}, {0x70, 2}, {0x60, 1}, {0x64, 1}, {0x80, 1}, {0xF4, 4}, {0x600, 0x20},
	} {
		if err := bus.Insert(r.base, r.size, "dev", nopDevice{}); err != nil {
			b.Fatal(err)
		}
	}
	return bus
}

// BenchmarkBusWrite is the dispatch of an OUT to port 0x80 (the POST port
// Linux writes for I/O delays).
func BenchmarkBusWrite(b *testing.B) {
	bus := kvmmPIOBus(b)
	data := []byte{0}
	for b.Loop() {
		if !bus.Write(0x80, data) {
			b.Fatal("port 0x80 unmapped")
		}
	}
}

// BenchmarkBusRead is an IN from the UART's LSR, what a polling console does
// for every byte.
func BenchmarkBusRead(b *testing.B) {
	bus := kvmmPIOBus(b)
	data := []byte{0}
	for b.Loop() {
		bus.Read(0x3FD, data)
	}
}

// BenchmarkBusMiss is an access to an unmapped address.
func BenchmarkBusMiss(b *testing.B) {
	bus := kvmmPIOBus(b)
	data := []byte{0, 0, 0, 0}
	for b.Loop() {
		if bus.Write(0xD0000000, data) {
			b.Fatal("unmapped address dispatched")
		}
	}
}

// BenchmarkBusWriteParallel is the same dispatch from several vCPU threads.
func BenchmarkBusWriteParallel(b *testing.B) {
	bus := kvmmPIOBus(b)
	b.RunParallel(func(pb *testing.PB) {
		data := []byte{0}
		for pb.Next() {
			bus.Write(0x80, data)
		}
	})
}
