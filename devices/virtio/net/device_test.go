package net

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
	"github.com/kvmm/kvmm/vhost"
)

func TestConfigSpaceAndFeatures(t *testing.T) {
	for _, tc := range []struct {
		pairs int
		noUFO bool
	}{{1, false}, {4, true}} {
		fh := newFakeHost(t, tc.pairs)
		fh.noUFO = tc.noUFO
		d := newTestNet(t, fh, nil)
		h := virtiotest.New(t, d, virtiotest.Options{})
		if got := h.ConfigRead16(0x02); got != virtio.PCIDeviceIDBase+1 {
			t.Errorf("PCI device ID %#x, want 0x1041", got)
		}
		cfg := h.DeviceConfig(0, configLen)
		if MAC(cfg[0:6]) != testMAC {
			t.Errorf("config mac % x, want %s", cfg[0:6], testMAC)
		}
		if s := binary.LittleEndian.Uint16(cfg[6:]); s != StatusLinkUp {
			t.Errorf("config status %#x, want LINK_UP", s)
		}
		if n := binary.LittleEndian.Uint16(cfg[8:]); int(n) != tc.pairs {
			t.Errorf("max_virtqueue_pairs %d, want %d", n, tc.pairs)
		}
		f := h.DeviceFeatures()
		for _, want := range []uint64{virtio.FeatureVersion1, virtio.FeatureEventIdx, virtio.FeatureIndirectDesc,
			FeatureMAC, FeatureStatus, FeatureMrgRxbuf, FeatureCtrlVQ, FeatureCsum, FeatureGuestCsum,
			FeatureHostTSO4, FeatureHostTSO6, FeatureGuestTSO4, FeatureGuestTSO6} {
			if f&want == 0 {
				t.Errorf("%d pairs: feature %#x not offered (features %#x)", tc.pairs, want, f)
			}
		}
		if got := f&FeatureMQ != 0; got != (tc.pairs > 1) {
			t.Errorf("%d pairs: MQ offered %v", tc.pairs, got)
		}
		if got := f&(FeatureGuestUFO|FeatureHostUFO) != 0; got == tc.noUFO {
			t.Errorf("UFO offered %v with a host that takes it %v", got, !tc.noUFO)
		}
		if n := h.Common(virtio.CommonNumQueues, 2); int(n) != 2*tc.pairs+1 {
			t.Errorf("num_queues %d, want %d", n, 2*tc.pairs+1)
		}
		if fh.lastOffload() != 0 {
			t.Errorf("host offloads %#x after New, want 0", fh.lastOffload())
		}
	}
}

// Spec §5.1.3.1: a driver may not accept a feature without the ones it
// depends on; FEATURES_OK stays clear.
func TestFeatureDependencies(t *testing.T) {
	d := newTestNet(t, newFakeHost(t, 2), nil)
	h := virtiotest.New(t, d, virtiotest.Options{})
	for _, f := range []uint64{FeatureGuestTSO4, FeatureHostTSO6, FeatureGuestECN | FeatureGuestCsum,
		FeatureHostECN | FeatureCsum, FeatureMQ, FeatureCtrlGuestOffloads} {
		if h.Negotiate(baseFeatures | f) {
			t.Errorf("FEATURES_OK accepted for %#x without its dependencies", f)
		}
	}
	if !h.Negotiate(baseFeatures | FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestECN | FeatureCtrlVQ | FeatureMQ) {
		t.Error("FEATURES_OK refused for a consistent set")
	}
}

// The GUEST_* offloads the driver accepted go to the host at DRIVER_OK
// and are withdrawn on reset.
func TestOffloadsFollowFeatures(t *testing.T) {
	fh := newFakeHost(t, 1)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{})
	acked := baseFeatures | FeatureCsum | FeatureHostTSO4 | FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestUFO
	h.Init(acked, queueSizes(3, 64)...)
	want := uint64(FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestUFO)
	if got := fh.lastOffload(); got != want {
		t.Errorf("host offloads %#x, want %#x", got, want)
	}
	if fl := vhost.OffloadFlags(want); fl != vhost.TunFCsum|vhost.TunFTSO4|vhost.TunFTSO6|vhost.TunFUFO {
		t.Errorf("TUNSETOFFLOAD flags %#x for features %#x", fl, want)
	}
	h.SetStatus(0)
	if got := fh.lastOffload(); got != 0 {
		t.Errorf("host offloads %#x after reset, want 0", got)
	}
}

// Guest transmit: a chain whose header and frame are split over several
// descriptors reaches the host as one frame, byte for byte; so does an
// indirect one.
func TestTransmitChainSpanningDescriptors(t *testing.T) {
	fh := newFakeHost(t, 1)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(baseFeatures|virtio.FeatureIndirectDesc|virtio.FeatureEventIdx, queueSizes(3, 64)...)
	tx := qs[1]
	f := frame(vhost.VnetHdr{Flags: vhost.VnetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}, 1000, 7)
	head := sendTx(h, tx, f[:HdrLen], f[HdrLen:HdrLen+100], f[HdrLen+100:HdrLen+101], f[HdrLen+101:])
	got, err := fh.recv(0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	equalFrames(t, "4-descriptor chain", got, f)
	if id, n, ok := tx.WaitUsed(5 * time.Second); !ok || id != head || n != 0 {
		t.Errorf("used element %d/%d/%v, want head %d with 0 bytes written", id, n, ok, head)
	}

	f2 := frame(vhost.VnetHdr{}, 60, 9)
	ind := make([]virtiotest.Buf, 0, 3)
	for _, p := range [][]byte{f2[:5], f2[5:40], f2[40:]} {
		a := h.Alloc(uint64(len(p)), 8)
		_ = h.Mem.Write(a, p)
		ind = append(ind, virtiotest.Buf{Addr: a, Len: uint32(len(p))})
	}
	tx.Publish(tx.AddIndirect(ind...))
	h.Notify(1)
	if got, err = fh.recv(0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	equalFrames(t, "indirect chain", got, f2)
	if m := d.Metrics(); m.TxFrames != 2 || m.TxBytes != 1060 {
		t.Errorf("metrics %+v, want 2 frames of 1060 bytes", m)
	}
}

// Chains no frame can be (shorter than a header and an Ethernet header,
// longer than MaxFrameLen) and frames the host refuses are dropped and
// completed; the device keeps working.
func TestTransmitDrops(t *testing.T) {
	fh := newFakeHost(t, 1)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(baseFeatures, queueSizes(3, 64)...)
	tx := qs[1]
	sendTx(h, tx, make([]byte, HdrLen+13))
	big := h.Alloc(MaxFrameLen+1, 8)
	tx.AddAndPublish(virtiotest.Buf{Addr: big, Len: MaxFrameLen + 1})
	h.Notify(1)
	for i := 0; i < 2; i++ {
		if _, _, ok := tx.WaitUsed(5 * time.Second); !ok {
			t.Fatalf("dropped chain %d not completed", i)
		}
	}
	fh.noFrame(0, 50*time.Millisecond)
	good := frame(vhost.VnetHdr{}, 64, 1)
	sendTx(h, tx, good)
	got, err := fh.recv(0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	equalFrames(t, "frame after drops", got, good)
	if m := d.Metrics(); m.TxDropped != 2 || m.TxFrames != 1 {
		t.Errorf("metrics %+v, want 2 dropped, 1 sent", m)
	}
	if h.Status()&virtio.StatusNeedsReset != 0 {
		t.Error("dropped frames set DEVICE_NEEDS_RESET")
	}
}

// Guest receive without MRG_RXBUF: the frame and its header land in one
// chain, num_buffers is 1 and the used length covers both. A frame larger
// than the chain is dropped and the chain returned empty.
func TestReceiveSingleBuffer(t *testing.T) {
	fh := newFakeHost(t, 1)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(baseFeatures|virtio.FeatureEventIdx, queueSizes(3, 64)...)
	rx := qs[0]
	bufs := postRx(h, rx, 2, 1526)
	in := frame(vhost.VnetHdr{}, 1000, 3)
	in[hdrNumBuffersOff], in[hdrNumBuffersOff+1] = 0xAA, 0xBB // tun leaves these alone
	fh.inject(0, in)
	id, n, ok := rx.WaitUsed(5 * time.Second)
	if !ok || n != uint32(len(in)) {
		t.Fatalf("used %d/%d/%v, want %d bytes", id, n, ok, len(in))
	}
	got := readGuest(t, h, bufs[id].addr, n)
	if nb := binary.LittleEndian.Uint16(got[hdrNumBuffersOff:]); nb != 1 {
		t.Errorf("num_buffers %d, want 1", nb)
	}
	equalFrames(t, "received frame", got[HdrLen:], in[HdrLen:])

	fh.inject(0, frame(vhost.VnetHdr{}, 2000, 4))
	if _, n, ok = rx.WaitUsed(5 * time.Second); !ok || n != 0 {
		t.Errorf("oversized frame: used length %d (%v), want the chain back empty", n, ok)
	}
	if m := d.Metrics(); m.RxFrames != 1 || m.RxDropped != 1 || m.RxBytes != 1000 {
		t.Errorf("metrics %+v", m)
	}
}

// MRG_RXBUF: a frame spread over several small buffers, num_buffers in
// the first one, the used elements (with their lengths) published
// together.
func TestReceiveMergeable(t *testing.T) {
	fh := newFakeHost(t, 1)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(baseFeatures|FeatureMrgRxbuf|virtio.FeatureEventIdx, queueSizes(3, 64)...)
	rx := qs[0]
	bufs := postRx(h, rx, 8, 256)
	in := frame(vhost.VnetHdr{}, 1000, 5) // 1012 bytes: 4 buffers
	fh.inject(0, in)
	waitFor(t, "4 used elements", func() bool { return rx.UsedIdx() == 4 })
	var got []byte
	var lens []uint32
	for i := 0; i < 4; i++ {
		id, n, _ := rx.NextUsed()
		lens = append(lens, n)
		got = append(got, readGuest(t, h, bufs[id].addr, n)...)
	}
	if lens[0] != 256 || lens[1] != 256 || lens[2] != 256 || lens[3] != 1012-768 {
		t.Errorf("used lengths %v", lens)
	}
	if nb := binary.LittleEndian.Uint16(got[hdrNumBuffersOff:]); nb != 4 {
		t.Errorf("num_buffers %d, want 4", nb)
	}
	equalFrames(t, "merged frame", got[HdrLen:], in[HdrLen:])

	// A 64 KiB frame (GSO) with only 4 buffers of 256 bytes left waits;
	// with 300 more it is delivered.
	big := frame(vhost.VnetHdr{}, 65000, 6)
	fh.inject(0, big)
	waitFor(t, "a wait for buffers", func() bool { return d.Metrics().RxWaits > 0 })
	if rx.UsedIdx() != 4 {
		t.Fatal("a partial frame was published")
	}
	more := postRx(h, rx, 60, 1100)
	for k, v := range more {
		bufs[k] = v
	}
	waitFor(t, "the big frame", func() bool { return rx.UsedIdx() > 4 })
	id, n, _ := rx.NextUsed()
	first := readGuest(t, h, bufs[id].addr, n)
	nb := int(binary.LittleEndian.Uint16(first[hdrNumBuffersOff:]))
	got = first
	waitFor(t, "all buffers of the big frame", func() bool { return int(rx.UsedIdx()) == 4+nb })
	for i := 1; i < nb; i++ {
		id, n, _ := rx.NextUsed()
		got = append(got, readGuest(t, h, bufs[id].addr, n)...)
	}
	equalFrames(t, "64 KiB merged frame", got[HdrLen:], big[HdrLen:])
}

// Back-pressure: with no receive buffers the device holds one frame and
// stops reading the host queue, without spinning; buffers the driver adds
// release the frames in order.
func TestReceiveBackPressure(t *testing.T) {
	fh := newFakeHost(t, 1)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(baseFeatures|virtio.FeatureEventIdx, queueSizes(3, 64)...)
	rx := qs[0]
	var sent [][]byte
	for i := 0; i < 5; i++ {
		f := frame(vhost.VnetHdr{}, 100+i, byte(i))
		sent = append(sent, f)
		fh.inject(0, f)
	}
	waitFor(t, "a wait for buffers", func() bool { return d.Metrics().RxWaits > 0 })
	time.Sleep(100 * time.Millisecond)
	if w := d.Metrics().RxWaits; w > 2 {
		t.Errorf("%d waits in 100 ms with no buffers: the receive worker spins", w)
	}
	// Four frames still queued in the host: the device read only one.
	var pending int
	rc, _ := fh.ports[0].SyscallConn()
	_ = rc.Control(func(fd uintptr) { pending, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	if pending == 0 {
		t.Error("nothing left in the host queue: the device kept reading without buffers")
	}
	for i := 0; i < 5; i++ {
		bufs := postRx(h, rx, 1, 2048)
		id, n, ok := rx.WaitUsed(5 * time.Second)
		if !ok {
			t.Fatalf("frame %d not delivered", i)
		}
		equalFrames(t, "frame in order", readGuest(t, h, bufs[id].addr, n)[HdrLen:], sent[i][HdrLen:])
	}
}

// Header checks on receive: without GUEST_CSUM a partially checksummed
// frame is dropped and DATA_VALID cleared; a GSO frame of a kind the
// driver did not accept is dropped.
func TestReceiveOffloadChecks(t *testing.T) {
	fh := newFakeHost(t, 1)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(baseFeatures|FeatureMrgRxbuf, queueSizes(3, 64)...)
	rx := qs[0]
	bufs := postRx(h, rx, 4, 2048)
	fh.inject(0, frame(vhost.VnetHdr{Flags: vhost.VnetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}, 100, 1))
	fh.inject(0, frame(vhost.VnetHdr{GSOType: vhost.VnetHdrGSOTCPv4, GSOSize: 1448, HdrLen: 54}, 3000, 2))
	fh.inject(0, frame(vhost.VnetHdr{Flags: vhost.VnetHdrFDataValid}, 100, 3))
	id, n, ok := rx.WaitUsed(5 * time.Second)
	if !ok {
		t.Fatal("the acceptable frame was not delivered")
	}
	got := readGuest(t, h, bufs[id].addr, n)
	if got[hdrFlagsOff] != 0 || got[HdrLen+14] != 3+14 {
		t.Errorf("delivered header flags %#x payload %#x: want the DATA_VALID frame with flags 0", got[0], got[HdrLen+14])
	}
	if m := d.Metrics(); m.RxDropped != 2 {
		t.Errorf("%d dropped, want 2", m.RxDropped)
	}
}

// Bogus descriptors set DEVICE_NEEDS_RESET (or drop the frame); the
// device never crashes and works again after the driver resets it.
func TestBogusChains(t *testing.T) {
	fh := newFakeHost(t, 1)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	for _, tc := range []struct {
		name  string
		queue int
		build func(q *virtiotest.DriverQueue)
	}{
		{"rx chain with a readable buffer", 0, func(q *virtiotest.DriverQueue) {
			q.AddAndPublish(virtiotest.Buf{Addr: h.Alloc(64, 8), Len: 64}, virtiotest.Buf{Addr: h.Alloc(2048, 8), Len: 2048, Write: true})
			fh.inject(0, frame(vhost.VnetHdr{}, 100, 1))
		}},
		{"tx descriptor outside RAM", 1, func(q *virtiotest.DriverQueue) {
			q.AddAndPublish(virtiotest.Buf{Addr: 1 << 40, Len: 100})
		}},
		{"tx next index past the queue", 1, func(q *virtiotest.DriverQueue) {
			q.WriteDesc(q.Desc, 0, h.Alloc(100, 8), 100, virtio.DescFNext, 1000)
			q.Publish(0)
		}},
		{"rx available index jump", 0, func(q *virtiotest.DriverQueue) {
			q.SetAvailIdx(200)
			fh.inject(0, frame(vhost.VnetHdr{}, 100, 1))
		}},
		{"mergeable buffer smaller than the header", 0, func(q *virtiotest.DriverQueue) {
			q.AddAndPublish(virtiotest.Buf{Addr: h.Alloc(8, 8), Len: 8, Write: true})
			fh.inject(0, frame(vhost.VnetHdr{}, 100, 1))
		}},
	} {
		qs := h.Init(baseFeatures|FeatureMrgRxbuf, queueSizes(3, 64)...)
		tc.build(qs[tc.queue])
		h.Notify(tc.queue)
		waitFor(t, tc.name+": DEVICE_NEEDS_RESET", func() bool { return h.Status()&virtio.StatusNeedsReset != 0 })
		// A reset and a fresh initialisation bring it back.
		h.SetStatus(0)
		drainPeer(fh, 0) // no receive worker now
		qs = h.Init(baseFeatures, queueSizes(3, 64)...)
		in := frame(vhost.VnetHdr{}, 64, 2)
		bufs := postRx(h, qs[0], 1, 2048)
		fh.inject(0, in)
		id, n, ok := qs[0].WaitUsed(5 * time.Second)
		if !ok {
			t.Fatalf("%s: no receive after the reset", tc.name)
		}
		equalFrames(t, tc.name+": frame after reset", readGuest(t, h, bufs[id].addr, n)[HdrLen:], in[HdrLen:])
		h.SetStatus(0)
	}
}

// drainPeer discards frames the host side queued for the guest (while
// no receive worker runs).
func drainPeer(fh *fakeHost, p int) {
	buf := make([]byte, MaxFrameLen)
	for {
		_ = fh.ports[p].SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := fh.ports[p].Read(buf); err != nil {
			_ = fh.ports[p].SetReadDeadline(time.Time{})
			return
		}
	}
}

// Device resets (Linux writes status 0 at probe, unbind and every S3
// resume) stop every worker: the goroutine count returns to where it was.
func TestResetStopsWorkers(t *testing.T) {
	fh := newFakeHost(t, 4)
	d := newTestNet(t, fh, nil)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	base := runtime.NumGoroutine()
	for round := 0; round < 20; round++ {
		qs := h.Init(baseFeatures|FeatureCtrlVQ|FeatureMQ|FeatureMrgRxbuf|virtio.FeatureEventIdx, queueSizes(9, 64)...)
		if ack := ctrlCmd(t, h, qs[8], ctrlClassMQ, ctrlMQVQPairsSet, []byte{4, 0}); ack != ctrlOK {
			t.Fatalf("VQ_PAIRS_SET 4: ack %d", ack)
		}
		if round%2 == 0 {
			// One pair with a frame waiting for buffers, one idle.
			fh.inject(1, frame(vhost.VnetHdr{}, 100, 1))
			waitFor(t, "a wait", func() bool { return d.Metrics().RxWaits > 0 })
		}
		h.SetStatus(0)
		goroutinesBack(t, base)
		for p := range fh.peers {
			drainPeer(fh, p)
		}
	}
}
