package net

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
	"github.com/kvmm/kvmm/internal/netnstest"
	"github.com/kvmm/kvmm/vhost"
)

// Throughput of the userspace backend over a real tap, in a namespace of
// the benchmark's own:
//
//	go test -run - -bench . -benchtime 2s -count 5 ./devices/virtio/net/
//
// The driver is Go code (virtiotest), not a guest: it publishes chains in
// batches and notifies through the fake KVM's ioeventfd, and sleeps on its
// MSI-X vector's eventfd until the device interrupts it (with EVENT_IDX),
// as a guest halts until its interrupt; it shares the machine's CPUs with
// the device. The figures are the device path's (rings, one copy and one
// tap syscall per frame, interrupts) plus the host stack's. A
// "frame" is one Ethernet frame of the given size; GSO frames are 64 KiB
// TCP super-frames that the tap passes on unsegmented. pkts/s is frames per
// second, Gbit/s counts Ethernet bytes. vhost's BenchmarkTapWrite and
// BenchmarkTapRead are the floor: the tap syscalls alone.

const (
	benchQueueSize = 256
	benchBatch     = 32 // chains published per notification (xmit_more)
)

// benchFrames are the frames both directions move: minimum and maximum
// Ethernet frames, and 64 KiB TCP super-frames (TSO).
var benchFrames = []struct {
	name string
	size int
	gso  bool
}{{"frame=64", 64, false}, {"frame=1514", 1514, false}, {"gso=65514", 65514, true}}

// reportRate adds pkts/s and Gbit/s.
func reportRate(b *testing.B, frames int, frameLen int) {
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(frames)/s, "pkts/s")
	b.ReportMetric(float64(frames)*float64(frameLen)*8/s/1e9, "Gbit/s")
}

// BenchmarkTx is guest transmit: chains of header + frame made available
// in batches, completed by the device after its write to the tap; the host
// stack drops the frames (nothing handles the EtherType, or nobody
// listens on the TCP port).
func BenchmarkTx(b *testing.B) {
	for _, tc := range benchFrames {
		b.Run(tc.name, func(b *testing.B) {
			netnstest.Run(b, func() { benchTx(b, tc.size, tc.gso) })
		})
	}
}

func benchTx(b *testing.B, size int, gso bool) {
	tap, d := openBenchNet(b)
	defer tap.Close()
	h := virtiotest.New(b, d, virtiotest.Options{IOEventFDs: true, VectorEventFDs: true, MemSize: 64 << 20})
	features := baseFeatures | virtio.FeatureEventIdx
	var f []byte
	hdr := vhost.VnetHdr{}
	if gso {
		features |= FeatureCsum | FeatureHostTSO4
		f, hdr = netnstest.TCPv4GSO(hostMAC, testMAC, size-54, 1448)
	} else {
		f = netnstest.Frame(hostMAC, testMAC, size, 0x77)
	}
	qs := h.Init(features, queueSizes(3, benchQueueSize)...)
	defer h.SetStatus(0)
	tx, irq := qs[1], newIRQ(b, h, 1)
	defer irq.Close()
	// One buffer per ring slot, header and frame contiguous (Linux's
	// can_push layout).
	bufs := make([]uint64, benchQueueSize)
	for i := range bufs {
		bufs[i] = h.Alloc(uint64(HdrLen+len(f)), 64)
		hb := make([]byte, HdrLen)
		hdr.Put(hb)
		_ = h.Mem.Write(bufs[i], append(hb, f...))
	}
	b.SetBytes(int64(len(f)))
	b.ResetTimer()
	sent, done, inflight := 0, 0, 0
	for done < b.N {
		n := 0
		for sent < b.N && inflight < benchQueueSize && n < benchBatch {
			tx.AddAndPublish(virtiotest.Buf{Addr: bufs[sent%benchQueueSize], Len: uint32(HdrLen + len(f))})
			sent++
			inflight++
			n++
		}
		if n > 0 {
			h.Notify(1)
		}
		drained := 0
		for {
			if _, _, ok := tx.NextUsed(); !ok {
				break
			}
			done++
			inflight--
			drained++
		}
		if drained == 0 && (inflight == benchQueueSize || sent == b.N) && irq.idle(tx, uint16(done)) {
			irq.wait(b) // the ring is full: sleep until a completion
		}
	}
	b.StopTimer()
	reportRate(b, b.N, len(f))
	if m := d.Metrics(); m.TxDropped != 0 {
		b.Fatalf("%d frames dropped", m.TxDropped)
	}
}

// BenchmarkRx is guest receive: the host sends frames out of the tap (a
// packet socket, paced to stay within what the tap queues) and the driver
// takes them from the used ring and makes the buffers available again.
func BenchmarkRx(b *testing.B) {
	for _, tc := range benchFrames {
		b.Run(tc.name, func(b *testing.B) {
			netnstest.Run(b, func() { benchRx(b, tc.size, tc.gso) })
		})
	}
}

func benchRx(b *testing.B, size int, gso bool) {
	tap, d := openBenchNet(b)
	defer tap.Close()
	ps := netnstest.OpenPacket(b, tap.IfIndex(), gso)
	defer ps.Close()
	h := virtiotest.New(b, d, virtiotest.Options{IOEventFDs: true, VectorEventFDs: true, MemSize: 64 << 20})
	features := baseFeatures | FeatureMrgRxbuf | virtio.FeatureEventIdx
	var f []byte
	hdr := vhost.VnetHdr{}
	bufLen := uint32(2048)
	if gso {
		features |= FeatureGuestCsum | FeatureGuestTSO4
		f, hdr = netnstest.TCPv4GSO(testMAC, hostMAC, size-54, 1448)
		bufLen = 4096 // Linux's mergeable buffers are about a page
	} else {
		f = netnstest.Frame(testMAC, hostMAC, size, 0x66)
	}
	qs := h.Init(features, queueSizes(3, benchQueueSize)...)
	defer h.SetStatus(0)
	rx, irq := qs[0], newIRQ(b, h, 0)
	defer irq.Close()
	bufs := postRx(h, rx, benchQueueSize, bufLen)
	perFrame := (HdrLen + len(f) + int(bufLen) - 1) / int(bufLen)
	window := max(2, benchQueueSize/perFrame/2)

	// The sender holds a credit per frame in flight, so the tap's queue
	// never overflows (it would drop), and sleeps when it has none.
	credits := make(chan struct{}, window)
	for range window {
		credits <- struct{}{}
	}
	stop := make(chan struct{})
	sendErr := make(chan error, 1)
	b.SetBytes(int64(len(f)))
	b.ResetTimer()
	go func() {
		defer close(sendErr)
		for sent := 0; sent < b.N; sent++ {
			select {
			case <-credits:
			case <-stop:
				return
			}
			if err := ps.Send(f, hdr); err != nil {
				sendErr <- err
				return
			}
		}
	}()
	var consumed uint16
	for got := 0; got < b.N; {
		drained := 0
		for {
			id, _, ok := rx.NextUsed()
			if !ok {
				break
			}
			rx.AddAndPublish(virtiotest.Buf{Addr: bufs[id].addr, Len: bufLen, Write: true})
			consumed++
			drained++
		}
		if drained == 0 {
			if irq.idle(rx, consumed) {
				irq.wait(b)
			}
			continue
		}
		h.Notify(0)
		now := int(d.Metrics().RxFrames)
		for ; got < now; got++ {
			select {
			case credits <- struct{}{}:
			default:
			}
		}
	}
	b.StopTimer()
	close(stop)
	if err := <-sendErr; err != nil {
		b.Fatal(err)
	}
	reportRate(b, b.N, len(f))
}

// benchIRQ is the test driver's interrupt: its MSI-X vector's eventfd,
// which the harness's fake router signals on every interrupt.
type benchIRQ struct {
	f     *os.File
	fence atomic.Uint32 // a LOCK-prefixed add: x86's full barrier
}

func newIRQ(b *testing.B, h *virtiotest.Harness, vector int) *benchIRQ {
	b.Helper()
	fd, err := unix.Dup(h.Router.EventFD(vector))
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		b.Fatal(err)
	}
	return &benchIRQ{f: os.NewFile(uintptr(fd), "irq")}
}

// wait sleeps until the vector fires (at once if it did since the last
// wait), parking the goroutine, not spinning on a CPU.
func (i *benchIRQ) wait(b *testing.B) {
	_ = i.f.SetReadDeadline(time.Now().Add(10 * time.Second))
	var v [8]byte
	if _, err := i.f.Read(v[:]); err != nil {
		b.Fatalf("waiting for the interrupt: %v", err)
	}
}

// idle reports whether q's used index is still consumed (the number of
// elements the driver took) after a full barrier: the used_event store of
// the last NextUsed must be visible to the device before the driver's last
// look at the used index, or each side could conclude the other has
// nothing to say (virtqueue_enable_cb_delayed's virtio_mb).
func (i *benchIRQ) idle(q *virtiotest.DriverQueue, consumed uint16) bool {
	i.fence.Add(1)
	return q.UsedIdx() == consumed
}

func (i *benchIRQ) Close() error { return i.f.Close() }

func openBenchNet(b *testing.B) (*vhost.Tap, *Net) {
	b.Helper()
	tap, err := vhost.OpenTap(vhost.TapOptions{Name: vhost.TapAuto})
	if err != nil {
		b.Fatal(err)
	}
	d, err := New(Config{MAC: testMAC, Host: TapHost(tap), QueueSize: benchQueueSize, Name: fmt.Sprint(b.Name()), Log: testLog(b)})
	if err != nil {
		tap.Close()
		b.Fatal(err)
	}
	return tap, d
}
