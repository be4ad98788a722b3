package net

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
	"github.com/kvmm/kvmm/vhost"
)

const mqFeatures = baseFeatures | FeatureCtrlVQ | FeatureMQ | FeatureMrgRxbuf | virtio.FeatureEventIdx

// Multiqueue as Linux's virtnet_set_queues drives it: pair 0 alone until
// VQ_PAIRS_SET; then every pair in use carries frames both ways, the host
// keeps exactly those queues attached, and counts outside 1..max are
// refused.
func TestControlMultiqueue(t *testing.T) {
	fh := newFakeHost(t, 3)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(mqFeatures, queueSizes(7, 64)...)
	ctrl := qs[6]
	if got := fh.activeCalls(); !slices.Equal(got, []int{1}) {
		t.Errorf("host queues attached at DRIVER_OK: %v, want [1]", got)
	}
	// Pair 1 is not in use yet: the device does not read its host queue.
	rx1 := qs[2]
	bufs := postRx(h, rx1, 4, 2048)
	in := frame(vhost.VnetHdr{}, 200, 1)
	fh.inject(1, in)
	time.Sleep(50 * time.Millisecond)
	if rx1.UsedIdx() != 0 {
		t.Fatal("a frame arrived on a queue pair not in use")
	}
	if ack := ctrlCmd(t, h, ctrl, ctrlClassMQ, ctrlMQVQPairsSet, []byte{3, 0}); ack != ctrlOK {
		t.Fatalf("VQ_PAIRS_SET 3: ack %d", ack)
	}
	if got := fh.activeCalls(); !slices.Equal(got, []int{1, 3}) {
		t.Errorf("host queues attached: %v, want [1 3]", got)
	}
	id, n, ok := rx1.WaitUsed(5 * time.Second)
	if !ok {
		t.Fatal("no frame on pair 1 after VQ_PAIRS_SET")
	}
	equalFrames(t, "pair 1 receive", readGuest(t, h, bufs[id].addr, n)[HdrLen:], in[HdrLen:])
	for p := 0; p < 3; p++ {
		out := frame(vhost.VnetHdr{}, 80, byte(10+p))
		sendTx(h, qs[2*p+1], out)
		got, err := fh.recv(p, 5*time.Second)
		if err != nil {
			t.Fatalf("pair %d transmit: %v", p, err)
		}
		equalFrames(t, "transmit on its pair", got, out)
	}
	for _, bad := range [][]byte{{0, 0}, {4, 0}, {3}, {0x00, 0x80}} {
		if ack := ctrlCmd(t, h, ctrl, ctrlClassMQ, ctrlMQVQPairsSet, bad); ack != ctrlErr {
			t.Errorf("VQ_PAIRS_SET % x: ack %d, want VIRTIO_NET_ERR", bad, ack)
		}
	}
	if ack := ctrlCmd(t, h, ctrl, ctrlClassMQ, ctrlMQVQPairsSet, []byte{1, 0}); ack != ctrlOK {
		t.Fatalf("VQ_PAIRS_SET 1: ack %d", ack)
	}
	if got := fh.activeCalls(); !slices.Equal(got, []int{1, 3, 1}) {
		t.Errorf("host queues attached: %v, want [1 3 1]", got)
	}
	// Shrunk: pair 1's host queue is no longer read.
	before := d.Metrics().RxFrames
	fh.inject(1, in)
	time.Sleep(50 * time.Millisecond)
	if d.Metrics().RxFrames != before {
		t.Error("a frame was received on a pair taken out of use")
	}
	if ack := ctrlCmd(t, h, ctrl, 0, 0, []byte{1}); ack != ctrlErr {
		t.Errorf("RX_PROMISC (CTRL_RX not offered): ack %d, want VIRTIO_NET_ERR", ack)
	}
	if m := d.Metrics(); m.CtrlCommands != 7 || m.CtrlErrors != 5 {
		t.Errorf("control metrics %+v, want 7 commands, 5 errors", m)
	}
}

// Without VIRTIO_NET_F_MQ the control queue is queue 2 even on a device
// with more pairs (spec §5.1.2), and VQ_PAIRS_SET is refused.
func TestControlQueueWithoutMQ(t *testing.T) {
	fh := newFakeHost(t, 2)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(baseFeatures|FeatureCtrlVQ, queueSizes(3, 64)...)
	if ack := ctrlCmd(t, h, qs[2], ctrlClassMQ, ctrlMQVQPairsSet, []byte{2, 0}); ack != ctrlErr {
		t.Errorf("VQ_PAIRS_SET without MQ: ack %d, want VIRTIO_NET_ERR", ack)
	}
}

// GUEST_OFFLOADS_SET changes the host's offloads within what the driver
// negotiated.
func TestControlGuestOffloads(t *testing.T) {
	fh := newFakeHost(t, 1)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(baseFeatures|FeatureCtrlVQ|FeatureCtrlGuestOffloads|FeatureGuestCsum|FeatureGuestTSO4, queueSizes(3, 64)...)
	set := func(v uint64) byte {
		return ctrlCmd(t, h, qs[2], ctrlClassGuestOffloads, ctrlGuestOffloadsSet, binary.LittleEndian.AppendUint64(nil, v))
	}
	if ack := set(FeatureGuestCsum); ack != ctrlOK {
		t.Fatalf("GUEST_OFFLOADS_SET CSUM: ack %d", ack)
	}
	if got := fh.lastOffload(); got != FeatureGuestCsum {
		t.Errorf("host offloads %#x, want GUEST_CSUM", got)
	}
	for _, bad := range []uint64{FeatureGuestTSO6 | FeatureGuestCsum, FeatureGuestTSO4} {
		if ack := set(bad); ack != ctrlErr {
			t.Errorf("GUEST_OFFLOADS_SET %#x: ack %d, want VIRTIO_NET_ERR", bad, ack)
		}
	}
	if got := fh.lastOffload(); got != FeatureGuestCsum {
		t.Errorf("refused commands changed the host offloads to %#x", got)
	}
	// The receive path follows: TSO4 frames are now refused.
	bufs := postRx(h, qs[0], 2, 4096)
	fh.inject(0, frame(vhost.VnetHdr{GSOType: vhost.VnetHdrGSOTCPv4, GSOSize: 1000, HdrLen: 54, Flags: vhost.VnetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}, 3000, 1))
	ok := frame(vhost.VnetHdr{Flags: vhost.VnetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}, 100, 2)
	fh.inject(0, ok)
	id, n, done := qs[0].WaitUsed(5 * time.Second)
	if !done {
		t.Fatal("no frame received")
	}
	equalFrames(t, "partial-checksum frame", readGuest(t, h, bufs[id].addr, n)[HdrLen:], ok[HdrLen:])
	if d.Metrics().RxDropped != 1 {
		t.Errorf("the TSO frame was not dropped: %+v", d.Metrics())
	}
}

// A control request with no room for its ack cannot be answered: the
// device needs a reset. A truncated header is answered VIRTIO_NET_ERR.
func TestControlMalformed(t *testing.T) {
	fh := newFakeHost(t, 1)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(baseFeatures|FeatureCtrlVQ, queueSizes(3, 64)...)
	ack := h.Alloc(1, 8)
	req := h.Alloc(1, 8)
	if _, ok := qs[2].Submit(5*time.Second, virtiotest.Buf{Addr: req, Len: 1}, virtiotest.Buf{Addr: ack, Len: 1, Write: true}); !ok {
		t.Fatal("truncated request not completed")
	}
	if got := readGuest(t, h, ack, 1)[0]; got != ctrlErr {
		t.Errorf("truncated request: ack %d, want VIRTIO_NET_ERR", got)
	}
	qs[2].AddAndPublish(virtiotest.Buf{Addr: req, Len: 1})
	h.Notify(2)
	waitFor(t, "DEVICE_NEEDS_RESET", func() bool { return h.Status()&virtio.StatusNeedsReset != 0 })
}
