package guesttest

import (
	"bufio"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/internal/netnstest"
)

// TestVirtioNetQEMU runs virtionet under QEMU, its oracle: a modern-only
// virtio-net-pci on q35 on a tap (userspace backend, vhost=off) in a
// network namespace of the test's own. The test is the other end of the
// wire: it sees the guest's frame on the tap through a packet socket,
// answers with a frame to the guest's MAC, and sees the frame the guest
// sends after resetting and setting the device up again.
func TestVirtioNetQEMU(t *testing.T) {
	requireQEMU(t)
	netnstest.Require(t)
	path := BuildT(t, "virtionet")
	netnstest.Run(t, func() {
		const tap = "kvmmq0"
		ifindex, remove := netnstest.PersistentTap(t, tap)
		defer remove()
		ps := netnstest.OpenPacket(t, ifindex, false)
		defer ps.Close()
		var res QEMUResult
		var runErr error
		ctx, cancel := context.WithTimeout(context.Background(), firmwareTimeout)
		defer cancel()
		done := netnstest.Go(t, func() {
			res, runErr = RunQEMU(ctx, path, "q35", 1,
				"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no,vhost=off",
				"-device", "virtio-net-pci,netdev=n0,disable-legacy=on,mac="+NetGuestMAC)
		})
		if err := NetExchange(ps, firmwareTimeout); err != nil {
			t.Error(err)
			cancel()
		}
		<-done
		t.Logf("%s", strings.Join(res.Args, " "))
		t.Logf("q35: %s (status %d) in %v; serial:\n%s", res.Ending, res.ExitStatus, res.Duration.Round(time.Millisecond), res.Serial)
		if runErr != nil {
			t.Fatalf("RunQEMU: %v", runErr)
		}
		expectVerdict(t, res, "virtionet", true)
		expectLines(t, res,
			"virtio-net 00:01.0\n",
			"  mac 52:54:00:12:34:56, link up\n",
			"  queues rx 0, tx 1, ctrl 2: 16 entries, no MSI-X vector\n",
			"  16 receive buffers of 2048 bytes posted\n",
			"  sent a 64-byte frame (header and frame in 2 descriptors), marker 0x5a\n",
			"  control queue: GUEST_OFFLOADS_SET 0 acknowledged\n",
			"  received the host's 100-byte frame from 02:00:00:00:00:01, every byte as sent, num_buffers 1 (",
			"  reset (status 0) and set up again: sent a frame, marker 0x5b\n",
			"virtionet: passed\n")
	})
}

// BenchmarkVirtioNetGuestTxQEMU is vmm's BenchmarkVirtioNetGuestTx under
// QEMU: the same guest with `virtionet.bench` on virtio-net-pci over a tap
// (userspace backend, vhost=off), the rate taken between its "bench start"
// and "bench done" lines as they arrive on QEMU's stdout. It measures the
// emulated guest more than QEMU's device: compare the two for what the VMM
// adds per frame.
//
//	go test -run - -bench VirtioNetGuest -benchtime 3x ./internal/guesttest/
func BenchmarkVirtioNetGuestTxQEMU(b *testing.B) {
	if err := QEMUAvailable(); err != nil {
		b.Skip(err)
	}
	netnstest.Require(b)
	path := BuildT(b, "virtionet")
	var total time.Duration
	netnstest.Run(b, func() {
		const tap = "kvmmqb0"
		ifindex, remove := netnstest.PersistentTap(b, tap)
		defer remove()
		for range b.N {
			total += qemuTxRun(b, path, tap, ifindex)
		}
	})
	b.ReportMetric(float64(b.N*NetBenchFrames)/total.Seconds(), "pkts/s")
	b.ReportMetric(total.Seconds()*1e6/float64(b.N*NetBenchFrames), "µs/frame")
}

func qemuTxRun(b *testing.B, path, tap string, ifindex int) time.Duration {
	ps := netnstest.OpenPacket(b, ifindex, false)
	defer ps.Close()
	ctx, cancel := context.WithTimeout(context.Background(), firmwareTimeout)
	defer cancel()
	args := QEMUArgs(path, "q35", 1, "-append", "virtionet.bench",
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no,vhost=off",
		"-device", "virtio-net-pci,netdev=n0,disable-legacy=on,mac="+NetGuestMAC)
	cmd := exec.CommandContext(ctx, QEMUBinary, args...) // from this thread: in the test's netns
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	marks := make(chan time.Time, 2)
	var serial strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := strings.TrimSuffix(sc.Text(), "\r")
			serial.WriteString(l + "\n")
			if l == "virtionet: bench start" || l == "virtionet: bench done" {
				marks <- time.Now()
			}
		}
		close(marks)
	}()
	if err := NetExchange(ps, firmwareTimeout); err != nil {
		b.Fatal(err)
	}
	start, ok1 := <-marks
	end, ok2 := <-marks
	err = cmd.Wait()
	var ee *exec.ExitError
	if !ok1 || !ok2 || !errors.As(err, &ee) || ee.ExitCode() != PassStatus {
		b.Fatalf("QEMU: %v\n%s", err, serial.String())
	}
	return end.Sub(start)
}
