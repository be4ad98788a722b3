package vmm

import (
	"log/slog"
	"os"
	"testing"

	"github.com/kvmm/kvmm/layout"
)

// benchMachine builds (but does not run) a VM with the built-in guest, for
// the exit-handler benchmarks. It needs /dev/kvm.
func benchMachine(b *testing.B) *VM {
	b.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		b.Skipf("no usable /dev/kvm: %v", err)
	}
	f.Close()
	cfg := DefaultConfig()
	cfg.Memory = 128 << 20
	vm, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	b.Cleanup(func() { vm.Stop("benchmark done") })
	return vm
}

// BenchmarkPIOExitPOST is the user-space part of a port-I/O exit after
// KVM_RUN returns: the handler the vCPU loop calls, the bus lookup and the
// device (an OUT to the POST port 0x80).
func BenchmarkPIOExitPOST(b *testing.B) {
	vm := benchMachine(b)
	data := []byte{0x42}
	for b.Loop() {
		vm.m.PIO(nil, layout.POSTPort, data, true)
	}
}

// BenchmarkPIOExitLSR is an IN from COM1's line status register.
func BenchmarkPIOExitLSR(b *testing.B) {
	vm := benchMachine(b)
	data := []byte{0}
	for b.Loop() {
		vm.m.PIO(nil, layout.COM1Port+5, data, false)
	}
}

// BenchmarkMMIOExitUnmapped is an MMIO write to an address nothing decodes.
func BenchmarkMMIOExitUnmapped(b *testing.B) {
	vm := benchMachine(b)
	data := []byte{0, 0, 0, 0}
	for b.Loop() {
		vm.m.MMIO(nil, 0xD0000000, data, true)
	}
}
