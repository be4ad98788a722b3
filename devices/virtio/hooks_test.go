package virtio_test

import (
	"sync"
	"testing"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

// vectorEcho is an echoDevice that records QueueVectorChanged calls, with
// the fd Activation.CallFD reports at that moment.
type vectorEcho struct {
	*echoDevice
	mu      sync.Mutex
	changed []int // queue index, call fd
}

func (d *vectorEcho) QueueVectorChanged(q *virtio.Queue) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.echoDevice.mu.Lock()
	fd, _ := d.act.CallFD(q)
	d.echoDevice.mu.Unlock()
	d.changed = append(d.changed, q.Index(), fd)
}

func (d *vectorEcho) calls() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.changed...)
}

// The transport tells a VectorWatcher about a queue's new MSI-X vector
// only while the device is active, only when the vector really changed,
// and after the change, so CallFD already returns the new vector's fd.
func TestQueueVectorChangedHook(t *testing.T) {
	d := &vectorEcho{echoDevice: newEcho()}
	h := virtiotest.New(t, d, virtiotest.Options{VectorEventFDs: true})
	if !h.Negotiate(features()) {
		t.Fatal("FEATURES_OK refused")
	}
	h.EnableMSIX()
	h.SetupQueue(0, 16, 0, true)
	h.SetupQueue(1, 16, 1, true)
	h.SetCommon(virtio.CommonQueueMSIXVector, 2, 2) // before DRIVER_OK: no call
	h.DriverOK()
	if c := d.calls(); len(c) != 0 {
		t.Fatalf("calls before the device ran: %v", c)
	}
	h.SetCommon(virtio.CommonQueueSelect, 2, 0)
	h.SetCommon(virtio.CommonQueueMSIXVector, 2, 0) // unchanged
	h.SetCommon(virtio.CommonQueueMSIXVector, 2, 2)
	if c := d.calls(); len(c) != 2 || c[0] != 0 || c[1] != h.Router.EventFD(2) {
		t.Fatalf("calls %v, want queue 0 with vector 2's eventfd %d", c, h.Router.EventFD(2))
	}
	h.SetStatus(0)
	h.SetCommon(virtio.CommonQueueSelect, 2, 0)
	h.SetCommon(virtio.CommonQueueMSIXVector, 2, 1)
	if c := d.calls(); len(c) != 2 {
		t.Errorf("calls after reset: %v", c)
	}
}
