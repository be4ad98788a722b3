package vmm

import (
	"log/slog"
	"testing"
	"time"

	"github.com/kvmm/kvmm/internal/guesttest"
)

// BenchmarkS3RoundTrip measures ACPI S3 cycles of the s3 test guest: each
// op is one suspend (the guest's SLP_EN write, every vCPU parked) and one
// wake (CPU reset through INIT, the FACS vector, the guest's resume path
// back to its next SLP_EN). ns/op is the whole cycle, guest code included;
// wake-ns/op is the VMM's share of it: Wake() from call to return.
func BenchmarkS3RoundTrip(b *testing.B) {
	requireKVM(b)
	elf := guesttest.BuildT(b, "s3")
	const cyclesPerVM = 9 // s3.S's maximum
	var wakeTotal time.Duration
	done := 0
	b.ResetTimer()
	for done < b.N {
		b.StopTimer()
		cfg := DefaultConfig()
		cfg.Kernel, cfg.Memory, cfg.Cmdline = elf, 64<<20, "s3.cycles=9"
		vm, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		events, cancel := vm.Subscribe()
		if err := vm.Start(); err != nil {
			b.Fatal(err)
		}
		suspended := func() {
			for e := range events {
				if e.Type == "state" && e.State == StateSuspended {
					return
				}
			}
			b.Fatal("VM stopped before suspending")
		}
		suspended() // boot is not part of a cycle
		b.StartTimer()
		for c := 0; c < cyclesPerVM && done < b.N; c++ {
			d, err := vm.Wake()
			if err != nil {
				b.Fatal(err)
			}
			wakeTotal += d
			done++
			if c < cyclesPerVM-1 {
				suspended()
			} else {
				<-vm.Done() // the guest's last resume ends in its PASS
			}
		}
		b.StopTimer()
		vm.Stop("benchmark done")
		<-vm.Done()
		cancel()
	}
	b.ReportMetric(float64(wakeTotal.Nanoseconds())/float64(b.N), "wake-ns/op")
}
