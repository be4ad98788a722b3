package vmm

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kvmm/kvmm/internal/guesttest"
	"github.com/kvmm/kvmm/internal/netnstest"
)

// BenchmarkVirtioNetGuestTx is the userspace backend driven by a guest:
// virtionet with `virtionet.bench` sends guesttest.NetBenchFrames 64-byte
// frames, each made available, notified (a 16-bit MMIO write that KVM turns
// into the transmit queue's ioeventfd) and its completion polled in the
// used ring, and the rate is taken between its "bench start" and "bench
// done" lines. On this workplace's KVM the guest's kernel-mode code is
// emulated (~1M instructions/s), so the figure measures mostly that
// emulator, not the device (BenchmarkTx in devices/virtio/net has the
// device path alone); internal/guesttest's BenchmarkVirtioNetGuestTxQEMU is
// the same guest under QEMU's virtio-net-pci.
//
//	go test -run - -bench VirtioNetGuest -benchtime 3x ./vmm/
func BenchmarkVirtioNetGuestTx(b *testing.B) {
	requireKVM(b)
	netnstest.Require(b)
	cfg := DefaultConfig()
	cfg.Kernel = guesttest.BuildT(b, "virtionet")
	cfg.Memory = 128 << 20
	cfg.Cmdline = "virtionet.bench"
	cfg.OnReboot = OnRebootExit
	cfg.Net = []string{"tap=kvmmb0,mac=" + guesttest.NetGuestMAC + ",vhost=off"}
	var total time.Duration
	netnstest.Run(b, func() {
		for range b.N {
			total += guestTxRun(b, cfg)
		}
	})
	b.ReportMetric(float64(b.N*guesttest.NetBenchFrames)/total.Seconds(), "pkts/s")
	b.ReportMetric(total.Seconds()*1e6/float64(b.N*guesttest.NetBenchFrames), "µs/frame")
}

// guestTxRun boots one VM and returns the time its bench loop took.
func guestTxRun(b *testing.B, cfg Config) time.Duration {
	var out SerialBuffer
	vm, err := New(cfg, Options{Serial: &out, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	link, err := netlink.LinkByName("kvmmb0")
	if err != nil {
		b.Fatal(err)
	}
	ps := netnstest.OpenPacket(b, link.Attrs().Index, false)
	defer ps.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vm.Start(); err != nil {
		b.Fatal(err)
	}
	if err := guesttest.NetExchange(ps, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	if err := out.WaitFor(ctx, "virtionet: bench start\n"); err != nil {
		b.Fatalf("%v\n%s", err, out.String())
	}
	start := time.Now()
	if err := out.WaitFor(ctx, "virtionet: bench done\n"); err != nil {
		b.Fatalf("%v\n%s", err, out.String())
	}
	d := time.Since(start)
	if res, err := vm.Wait(ctx); err != nil || res.Status != guesttest.PassStatus {
		b.Fatalf("%+v, %v\n%s", res, err, out.String())
	}
	return d
}
