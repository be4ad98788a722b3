package net

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
	"github.com/kvmm/kvmm/internal/netnstest"
	"github.com/kvmm/kvmm/vhost"
)

// The device against the real tun driver, in a network namespace of the
// test's own: frames the guest sends are seen by the host stack (a packet
// socket on the tap), frames the host sends out of the tap reach the
// guest, and the offloads the driver accepts are what the kernel applies.

var hostMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}

// openTapNet opens a tap (created, removed on return) and a device on it.
func openTapNet(t *testing.T, queues int) (*vhost.Tap, *Net) {
	t.Helper()
	tap, err := vhost.OpenTap(vhost.TapOptions{Name: vhost.TapAuto, Queues: queues})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{MAC: testMAC, Host: TapHost(tap), Name: t.Name(), Log: testLog(t)})
	if err != nil {
		tap.Close()
		t.Fatal(err)
	}
	return tap, d
}

func TestRealTapRoundTrip(t *testing.T) {
	netnstest.Run(t, func() {
		tap, d := openTapNet(t, 1)
		defer tap.Close()
		ps := netnstest.OpenPacket(t, tap.IfIndex(), false)
		defer ps.Close()
		h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
		qs := h.Init(baseFeatures|FeatureMrgRxbuf|virtio.FeatureEventIdx, queueSizes(3, 256)...)
		defer h.SetStatus(0) // stop the workers before the tap goes

		// Guest -> host, header and frame in separate descriptors.
		out := netnstest.Frame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, testMAC, 200, 0x5a)
		sendTx(h, qs[1], make([]byte, HdrLen), out)
		_, got, err := ps.Recv(5*time.Second, func(f []byte) bool { return netnstest.IsTestFrame(f, 0x5a) })
		if err != nil {
			t.Fatalf("the host did not see the guest's frame: %v", err)
		}
		equalFrames(t, "guest frame on the host", got, out)

		// Host -> guest.
		bufs := postRx(h, qs[0], 16, 2048)
		in := netnstest.Frame(testMAC, hostMAC, 300, 0xa5)
		if err := ps.Send(in, vhost.VnetHdr{}); err != nil {
			t.Fatal(err)
		}
		id, n, ok := qs[0].WaitUsed(5 * time.Second)
		if !ok {
			t.Fatal("the guest did not receive the host's frame")
		}
		b := readGuest(t, h, bufs[id].addr, n)
		if nb := binary.LittleEndian.Uint16(b[hdrNumBuffersOff:]); nb != 1 {
			t.Errorf("num_buffers %d", nb)
		}
		equalFrames(t, "host frame in the guest", b[HdrLen:], in)
	})
}

// The feature -> TUNSETOFFLOAD mapping as the kernel applies it: the host
// sends one 3000-byte TCP super-frame out of the tap. A driver that
// accepted GUEST_CSUM and GUEST_TSO4 gets it whole, with the segmentation
// request in the header; one that did not gets it cut into complete
// segments by the host stack. Guest transmit of a TSO frame (HOST_TSO4)
// reaches the host as one GSO packet.
func TestRealTapOffloads(t *testing.T) {
	netnstest.Run(t, func() {
		tap, d := openTapNet(t, 1)
		defer tap.Close()
		ps := netnstest.OpenPacket(t, tap.IfIndex(), true)
		defer ps.Close()
		h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
		super, gso := netnstest.TCPv4GSO(testMAC, hostMAC, 3000, 1000)
		for _, tc := range []struct {
			name     string
			features uint64
			segments int
		}{
			{"GUEST_CSUM|GUEST_TSO4", baseFeatures | FeatureMrgRxbuf | FeatureGuestCsum | FeatureGuestTSO4, 1},
			{"no offloads", baseFeatures | FeatureMrgRxbuf, 3},
		} {
			qs := h.Init(tc.features, queueSizes(3, 256)...)
			bufs := postRx(h, qs[0], 64, 4096)
			if err := ps.Send(super, gso); err != nil {
				t.Fatal(err)
			}
			var total int
			for i := 0; i < tc.segments; i++ {
				id, n, ok := qs[0].WaitUsed(5 * time.Second)
				if !ok {
					t.Fatalf("%s: %d of %d frames", tc.name, i, tc.segments)
				}
				b := readGuest(t, h, bufs[id].addr, n)
				hdr, _ := vhost.ParseVnetHdr(b)
				f := b[HdrLen:]
				if !netnstest.IsTCPv4(f) {
					t.Fatalf("%s: frame %d is not the TCP frame: % x", tc.name, i, head(f))
				}
				total += len(f) - 54
				if tc.segments == 1 {
					if hdr.GSOType != vhost.VnetHdrGSOTCPv4 || hdr.GSOSize != 1000 || len(f) != len(super) {
						t.Errorf("%s: header %+v, %d bytes; want the whole super-frame with TSO4", tc.name, hdr, len(f))
					}
				} else if hdr.GSOType != vhost.VnetHdrGSONone || hdr.Flags&vhost.VnetHdrFNeedsCsum != 0 || len(f) > 1054 {
					t.Errorf("%s: segment header %+v, %d bytes; want complete segments", tc.name, hdr, len(f))
				}
			}
			if total != 3000 {
				t.Errorf("%s: %d payload bytes, want 3000", tc.name, total)
			}
			h.SetStatus(0)
		}

		qs := h.Init(baseFeatures|FeatureCsum|FeatureHostTSO4, queueSizes(3, 256)...)
		defer h.SetStatus(0)
		hb := make([]byte, HdrLen)
		gso.Put(hb)
		sendTx(h, qs[1], hb, super)
		hdr, got, err := ps.Recv(5*time.Second, netnstest.IsTCPv4)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(super) || hdr.GSOType != vhost.VnetHdrGSOTCPv4 || hdr.GSOSize != 1000 {
			t.Errorf("guest TSO frame reached the host as %d bytes with %+v", len(got), hdr)
		}
	})
}

// Multiqueue on a real multi-queue tap: VQ_PAIRS_SET attaches and detaches
// the tap's queues (TUNSETQUEUE), and frames flow on every pair in use.
func TestRealTapMultiqueue(t *testing.T) {
	netnstest.Run(t, func() {
		tap, d := openTapNet(t, 2)
		defer tap.Close()
		ps := netnstest.OpenPacket(t, tap.IfIndex(), false)
		defer ps.Close()
		h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
		qs := h.Init(mqFeatures, queueSizes(5, 256)...)
		defer h.SetStatus(0)
		if ack := ctrlCmd(t, h, qs[4], ctrlClassMQ, ctrlMQVQPairsSet, []byte{2, 0}); ack != ctrlOK {
			t.Fatalf("VQ_PAIRS_SET 2: ack %d", ack)
		}
		for p := 0; p < 2; p++ {
			out := netnstest.Frame(hostMAC, testMAC, 100, byte(0x30+p))
			sendTx(h, qs[2*p+1], make([]byte, HdrLen), out)
			if _, _, err := ps.Recv(5*time.Second, func(f []byte) bool { return netnstest.IsTestFrame(f, byte(0x30+p)) }); err != nil {
				t.Errorf("pair %d: the host did not see the frame: %v", p, err)
			}
		}
		// The host spreads frames over the attached queues (by flow hash):
		// send several flows and expect them all, on either pair.
		postRx(h, qs[0], 32, 2048)
		postRx(h, qs[2], 32, 2048)
		for i := 0; i < 8; i++ {
			f := netnstest.Frame(testMAC, [6]byte{0x02, 0, 0, 0, byte(i), 1}, 100, 0x40)
			if err := ps.Send(f, vhost.VnetHdr{}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "8 frames over both pairs", func() bool { return qs[0].UsedIdx()+qs[2].UsedIdx() == 8 })
		if ack := ctrlCmd(t, h, qs[4], ctrlClassMQ, ctrlMQVQPairsSet, []byte{1, 0}); ack != ctrlOK {
			t.Fatalf("VQ_PAIRS_SET 1: ack %d", ack)
		}
		// The tap's second queue is detached: every flow now lands on
		// pair 0 (pair 1's receive worker is stopped, so a frame steered
		// there would never arrive).
		before0, before1 := qs[0].UsedIdx(), qs[2].UsedIdx()
		for i := 0; i < 8; i++ {
			f := netnstest.Frame(testMAC, [6]byte{0x02, 0, 0, 1, byte(i), 1}, 100, 0x41)
			if err := ps.Send(f, vhost.VnetHdr{}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "8 frames on pair 0", func() bool { return qs[0].UsedIdx()-before0 == 8 })
		if qs[2].UsedIdx() != before1 {
			t.Error("a frame arrived on pair 1 after VQ_PAIRS_SET 1")
		}
		if m := d.Metrics(); m.RxHostErrors != 0 {
			t.Errorf("host read errors %d: a receive worker read a detached queue", m.RxHostErrors)
		}
	})
}

// A tap removed under a running device (kvmm's clean-up racing a guest)
// ends the receive worker instead of spinning on the error.
func TestRealTapClosedUnderDevice(t *testing.T) {
	netnstest.Run(t, func() {
		tap, d := openTapNet(t, 1)
		h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
		h.Init(baseFeatures, queueSizes(3, 64)...)
		if err := tap.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the receive worker to give up", func() bool { return d.Metrics().RxHostErrors == 1 })
		time.Sleep(20 * time.Millisecond)
		if n := d.Metrics().RxHostErrors; n != 1 {
			t.Errorf("%d read errors: the worker kept reading", n)
		}
		h.SetStatus(0)
	})
}
