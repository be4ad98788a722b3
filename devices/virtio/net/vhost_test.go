package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
	"github.com/kvmm/kvmm/vhost"
)

// These tests check the wiring of the vhost-net data path against a
// recording double of VhostBackend: what the device hands vhost (ring
// addresses, sizes, where to resume, kick and call eventfds, tap fds) and
// when it starts and stops it. The kernel path itself is not run here:
// this host has no /dev/vhost-net. vhost's own tests check the ioctl
// sequence NetBackend makes from a StartConfig against its double of the
// kernel device.

// fakeVhost records Start and Stop like *vhost.NetBackend would see them,
// with its rule that Start needs a prior Stop.
type fakeVhost struct {
	mu        sync.Mutex
	features  uint64
	calls     []string
	starts    []vhost.StartConfig
	running   []vhost.QueueConfig
	progress  uint16 // descriptors each ring "consumed" between Start and Stop
	failStart error
}

func newFakeVhost() *fakeVhost {
	return &fakeVhost{features: vhost.PassthroughFeatures}
}

func (f *fakeVhost) Features() uint64 { return f.features }

func (f *fakeVhost) Start(cfg vhost.StartConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("start %d", len(cfg.TapFDs)))
	if f.running != nil {
		return errors.New("vhost-net: Start while started; Stop first")
	}
	if f.failStart != nil {
		return f.failStart
	}
	f.starts = append(f.starts, cfg)
	f.running = slices.Clone(cfg.Queues)
	return nil
}

func (f *fakeVhost) Stop() ([]uint16, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "stop")
	if f.running == nil {
		return nil, nil
	}
	var bases []uint16
	for _, q := range f.running {
		bases = append(bases, q.LastAvailIdx+f.progress)
	}
	f.running = nil
	return bases, nil
}

func (f *fakeVhost) setProgress(n uint16) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.progress = n
}

func (f *fakeVhost) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeVhost) lastStart() vhost.StartConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts[len(f.starts)-1]
}

func notifyAddr(h *virtiotest.Harness, q int) uint64 {
	return h.BAR + virtio.NotifyOffset + uint64(q)*virtio.NotifyOffMultiplier
}

// checkQueue compares one vhost queue with the driver's ring and the
// transport's eventfds: the kick fd must be the one registered as the
// queue's ioeventfd, the call fd the irqfd eventfd of the queue's vector.
func checkQueue(t *testing.T, h *virtiotest.Harness, got vhost.QueueConfig, dq *virtiotest.DriverQueue, vector int, base uint16) {
	t.Helper()
	want := vhost.QueueConfig{Size: dq.Size, DescGPA: dq.Desc, AvailGPA: dq.Avail, UsedGPA: dq.Used,
		LastAvailIdx: base, KickFD: h.Transport.Queues()[dq.Index].Kick().FD(), CallFD: h.Router.EventFD(vector)}
	if got != want {
		t.Errorf("queue %d: vhost got %+v, want %+v", dq.Index, got, want)
	}
	if fd, ok := h.IOEvents.Addrs()[notifyAddr(h, dq.Index)]; !ok || fd != got.KickFD {
		t.Errorf("queue %d: kick fd %d is not the ioeventfd registered at its notify address (%d, %v)", dq.Index, got.KickFD, fd, ok)
	}
}

func TestVhostWiring(t *testing.T) {
	fh := newFakeHost(t, 2)
	fv := newFakeVhost()
	d := newTestNet(t, fh, fv)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true, VectorEventFDs: true})
	acked := mqFeatures | FeatureGuestCsum | FeatureGuestTSO4
	qs := h.Init(acked, queueSizes(5, 64)...)

	// DRIVER_OK: one pair, from the start of the rings.
	if c := fv.takeCalls(); !slices.Equal(c, []string{"start 1"}) {
		t.Fatalf("calls at DRIVER_OK: %v", c)
	}
	cfg := fv.lastStart()
	if cfg.Memory != h.Mem || cfg.Features != acked || !slices.Equal(cfg.TapFDs, fh.FDs()[:1]) || len(cfg.Queues) != 2 {
		t.Fatalf("start config: features %#x tap fds %v, %d queues", cfg.Features, cfg.TapFDs, len(cfg.Queues))
	}
	checkQueue(t, h, cfg.Queues[0], qs[0], 0, 0)
	checkQueue(t, h, cfg.Queues[1], qs[1], 1, 0)
	if got := fh.lastOffload(); got != FeatureGuestCsum|FeatureGuestTSO4 {
		t.Errorf("host offloads %#x with vhost", got)
	}

	// VQ_PAIRS_SET (served in user space: vhost has no control queue):
	// stop, then start both pairs, pair 0 resuming where it stopped.
	fv.setProgress(5)
	if ack := ctrlCmd(t, h, qs[4], ctrlClassMQ, ctrlMQVQPairsSet, []byte{2, 0}); ack != ctrlOK {
		t.Fatalf("VQ_PAIRS_SET 2: ack %d", ack)
	}
	if c := fv.takeCalls(); !slices.Equal(c, []string{"stop", "start 2"}) {
		t.Fatalf("calls for VQ_PAIRS_SET: %v", c)
	}
	cfg = fv.lastStart()
	if !slices.Equal(cfg.TapFDs, fh.FDs()) || len(cfg.Queues) != 4 {
		t.Fatalf("two pairs: tap fds %v, %d queues", cfg.TapFDs, len(cfg.Queues))
	}
	for i := 0; i < 4; i++ {
		base := uint16(0)
		if i < 2 {
			base = 5
		}
		checkQueue(t, h, cfg.Queues[i], qs[i], i, base)
	}
	if got := fh.activeCalls(); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("host queues attached %v", got)
	}

	// The driver moves transmitq2 to vector 4: re-wired to that vector's
	// eventfd, every ring resuming.
	h.SetCommon(virtio.CommonQueueSelect, 2, 3)
	h.SetCommon(virtio.CommonQueueMSIXVector, 2, 4)
	if c := fv.takeCalls(); !slices.Equal(c, []string{"stop", "start 2"}) {
		t.Fatalf("calls for a vector change: %v", c)
	}
	cfg = fv.lastStart()
	checkQueue(t, h, cfg.Queues[3], qs[3], 4, 5)
	checkQueue(t, h, cfg.Queues[0], qs[0], 0, 10)
	// Writing the same vector again changes nothing.
	h.SetCommon(virtio.CommonQueueMSIXVector, 2, 4)
	if c := fv.takeCalls(); len(c) != 0 {
		t.Errorf("calls for an unchanged vector: %v", c)
	}

	// Reset (as on S3 resume): stopped; the next DRIVER_OK starts on the
	// driver's new rings from index 0.
	h.SetStatus(0)
	if c := fv.takeCalls(); !slices.Equal(c, []string{"stop"}) {
		t.Fatalf("calls on reset: %v", c)
	}
	qs = h.Init(acked, queueSizes(5, 64)...)
	if c := fv.takeCalls(); !slices.Equal(c, []string{"start 1"}) {
		t.Fatalf("calls at the second DRIVER_OK: %v", c)
	}
	cfg = fv.lastStart()
	checkQueue(t, h, cfg.Queues[0], qs[0], 0, 0)
	checkQueue(t, h, cfg.Queues[1], qs[1], 1, 0)
	if m := d.Metrics(); m.VhostStarts != 4 || m.VhostStops != 3 {
		t.Errorf("metrics %+v", m)
	}
	// Nothing is read from or written to the tap by kvmm meanwhile.
	fh.inject(0, frame(vhost.VnetHdr{}, 100, 1))
	postRx(h, qs[0], 1, 2048)
	time.Sleep(20 * time.Millisecond)
	if qs[0].UsedIdx() != 0 {
		t.Error("the userspace backend touched a vhost-net ring")
	}
}

// Without MSI-X (INTx) a queue has no irqfd: vhost signals a relay
// eventfd whose worker raises the interrupt through the transport.
func TestVhostCallRelayWithoutMSIX(t *testing.T) {
	fh := newFakeHost(t, 1)
	fv := newFakeVhost()
	d := newTestNet(t, fh, fv)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true, NoMSIX: true})
	h.Init(baseFeatures, queueSizes(3, 64)...)
	cfg := fv.lastStart()
	if h.INTx.Raised() != 0 {
		t.Fatalf("interrupt before vhost signalled")
	}
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	for i, q := range cfg.Queues {
		if q.CallFD <= 0 {
			t.Fatalf("queue %d: call fd %d", i, q.CallFD)
		}
		before := h.INTx.Raised()
		if _, err := writeFD(q.CallFD, one[:]); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the relayed interrupt", func() bool { return h.INTx.Raised() > before })
		if isr := h.ISR(); isr&virtio.ISRQueue == 0 {
			t.Errorf("queue %d: ISR %#x after a relayed call", i, isr)
		}
	}
	h.SetStatus(0)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// The device offers only the ring features the kernel's vhost-net has,
// and fails cleanly when vhost-net cannot start.
func TestVhostFeaturesAndStartFailure(t *testing.T) {
	fv := newFakeVhost()
	fv.features &^= 1 << vhost.FeatureEventIdx
	d := newTestNet(t, newFakeHost(t, 1), fv)
	if d.Features()&virtio.FeatureEventIdx != 0 {
		t.Error("EVENT_IDX offered though vhost-net lacks it")
	}
	if d.Features()&FeatureMrgRxbuf == 0 {
		t.Error("MRG_RXBUF not offered though vhost-net has it")
	}
	fv.features = 0
	if _, err := New(Config{MAC: testMAC, Host: newFakeHost(t, 1), Vhost: fv}); err == nil {
		t.Error("a vhost-net without VERSION_1 accepted")
	}

	fv = newFakeVhost()
	fv.failStart = errors.New("VHOST_SET_OWNER: injected")
	d = newTestNet(t, newFakeHost(t, 1), fv)
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true, VectorEventFDs: true})
	if !h.Negotiate(baseFeatures) {
		t.Fatal("FEATURES_OK refused")
	}
	h.SetupQueue(0, 64, 0, false)
	h.SetupQueue(1, 64, 1, false)
	h.DriverOK()
	if h.Status()&virtio.StatusNeedsReset == 0 {
		t.Errorf("status %#x after a failed vhost start, want DEVICE_NEEDS_RESET", h.Status())
	}
}

func writeFD(fd int, b []byte) (int, error) { return unix.Write(fd, b) }
