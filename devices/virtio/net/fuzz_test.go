package net

import (
	"testing"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

// The guest-controlled inputs of the device model beyond the descriptor
// chains themselves (which devices/virtio fuzzes): control requests, and
// the buffers a frame is spread over. Whatever the guest does, the device
// answers, drops or sets DEVICE_NEEDS_RESET, and never panics or hangs.
//
//	go test -run - -fuzz FuzzControlQueue -fuzztime 30s ./devices/virtio/net/

func FuzzControlQueue(f *testing.F) {
	f.Add([]byte{ctrlClassMQ, ctrlMQVQPairsSet, 2, 0}, true, uint8(3))
	f.Add([]byte{ctrlClassGuestOffloads, ctrlGuestOffloadsSet, 2, 0, 0, 0, 0, 0, 0, 0}, true, uint8(1))
	f.Add([]byte{ctrlClassMQ}, false, uint8(2))
	f.Add(make([]byte, 200), true, uint8(7))
	f.Fuzz(func(t *testing.T, req []byte, ack bool, split uint8) {
		fh := newFakeHost(t, 2)
		d := newTestNet(t, fh, nil)
		h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
		qs := h.Init(mqFeatures|FeatureCtrlGuestOffloads|FeatureGuestCsum|FeatureGuestTSO4, queueSizes(5, 16)...)
		var bufs []virtiotest.Buf
		for len(req) > 0 {
			n := min(len(req), int(split%8)+1)
			a := h.Alloc(uint64(n), 1)
			_ = h.Mem.Write(a, req[:n])
			bufs = append(bufs, virtiotest.Buf{Addr: a, Len: uint32(n)})
			req = req[n:]
		}
		if ack {
			bufs = append(bufs, virtiotest.Buf{Addr: h.Alloc(1, 1), Len: 1, Write: true})
		}
		if len(bufs) == 0 || len(bufs) > 16 {
			return
		}
		qs[4].AddAndPublish(bufs...)
		h.Notify(4)
		waitFor(t, "an answer", func() bool {
			return qs[4].UsedIdx() == 1 || h.Status()&virtio.StatusNeedsReset != 0
		})
		if !ack && h.Status()&virtio.StatusNeedsReset == 0 {
			t.Error("a request without an ack byte was answered")
		}
		h.SetStatus(0)
	})
}

func FuzzReceive(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, uint16(64), true, uint8(8))
	f.Add(make([]byte, 3000), uint16(12), true, uint8(16))
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, uint16(2048), false, uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, bufLen uint16, mrg bool, nbufs uint8) {
		if len(in) == 0 || len(in) > 9000 {
			return // a tap never reads empty; a socket pair reads EOF
		}
		fh := newFakeHost(t, 1)
		d := newTestNet(t, fh, nil)
		h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
		features := baseFeatures | FeatureGuestCsum | FeatureGuestTSO6
		if mrg {
			features |= FeatureMrgRxbuf
		}
		qs := h.Init(features, queueSizes(3, 16)...)
		n := int(nbufs%16) + 1
		for range n {
			a := h.Alloc(uint64(bufLen)+1, 1)
			qs[0].AddAndPublish(virtiotest.Buf{Addr: a, Len: uint32(bufLen), Write: true})
		}
		h.Notify(0)
		before := d.Metrics()
		fh.inject(0, in)
		// Placed, dropped, waiting for buffers that will not come, or a
		// broken device: any of them, soon, and nothing else.
		waitFor(t, "the frame's fate", func() bool {
			m := d.Metrics()
			return m.RxFrames+m.RxDropped+m.RxWaits > before.RxFrames+before.RxDropped+before.RxWaits ||
				h.Status()&virtio.StatusNeedsReset != 0
		})
		if m := d.Metrics(); m.RxFrames > before.RxFrames {
			if _, got, ok := qs[0].NextUsed(); !ok || got < HdrLen {
				t.Fatalf("a frame was counted but the used ring has %d bytes (%v)", got, ok)
			}
		}
		h.SetStatus(0)
	})
}
