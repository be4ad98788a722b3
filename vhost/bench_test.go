package vhost_test

import (
	"fmt"
	"github.com/kvmm/kvmm/internal/netnstest"
	. "github.com/kvmm/kvmm/vhost"
	"testing"
)

// Raw tap throughput, the floor under a userspace virtio-net backend: no
// virtqueues, just one frame (with its 12-byte vnet header) per syscall on
// a tap queue, in a namespace of the benchmark's own. Run with
//
//	go test -run - -bench Tap -count 5 ./vhost/
//
// pkts/s is frames per second of wall time on one goroutine.

// BenchmarkTapWrite is the guest-transmit direction: a write(2) of one frame
// into the tap, which the host stack receives (and, with nothing listening
// for the experimental EtherType, drops after the packet taps).
func BenchmarkTapWrite(b *testing.B) {
	for _, size := range []int{64, 1514} {
		b.Run(fmt.Sprintf("frame=%d", size), func(b *testing.B) {
			netnstest.Run(b, func() {
				tap, err := OpenTap(TapOptions{Name: TapAuto})
				if err != nil {
					b.Fatal(err)
				}
				defer tap.Close()
				q := tap.Queues()[0]
				buf := withHdr(VnetHdr{}, testFrame(macB, macA, size, 0x11))
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, err := q.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
			})
		})
	}
}

// BenchmarkTapRead is the guest-receive direction: the host sends one frame
// out of the tap (a packet socket's sendto) and the backend reads it from
// the queue; both syscalls are counted, as both happen per frame.
func BenchmarkTapRead(b *testing.B) {
	for _, size := range []int{64, 1514} {
		b.Run(fmt.Sprintf("frame=%d", size), func(b *testing.B) {
			netnstest.Run(b, func() {
				tap, err := OpenTap(TapOptions{Name: TapAuto})
				if err != nil {
					b.Fatal(err)
				}
				defer tap.Close()
				ps := openPacketSock(b, tap.IfIndex(), false)
				defer ps.Close()
				q := tap.Queues()[0]
				frame := testFrame(macA, macB, size, 0x22)
				buf := make([]byte, 65536)
				b.SetBytes(int64(size))
				for b.Loop() {
					if err := ps.Send(frame, VnetHdr{}); err != nil {
						b.Fatal(err)
					}
					for {
						n, err := q.Read(buf)
						if err != nil {
							b.Fatal(err)
						}
						// Skip the stack's own frames (IPv6 link-up chatter).
						if isTestFrame(buf[TapVnetHdrLen:n], 0x22) {
							break
						}
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
			})
		})
	}
}
