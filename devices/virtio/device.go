package virtio

import (
	"github.com/kvmm/kvmm/memory"
)

// Device is a virtio device model (block, console, entropy, net,
// balloon): what the transport needs to present it to a driver and run
// it. The transport owns everything generic — feature negotiation, the
// status state machine, queue configuration, notifications, interrupts,
// resets — and calls the device at the points where its own behaviour
// starts and stops.
//
// Lifecycle: Activate after the driver sets DRIVER_OK (once per driver
// initialisation); Reset on every device reset (status 0, which Linux
// writes at probe, on unbind and on every S3 resume) and before Close;
// Close once when the machine goes away.
type Device interface {
	// Type is the virtio device ID.
	Type() DeviceType
	// Features are the feature bits the device offers. They must include
	// FeatureVersion1 (there is no legacy interface); RingFeatures lists
	// the ring features the transport implements.
	Features() uint64
	// QueueSizes lists the maximum size of each virtqueue, a power of two.
	QueueSizes() []uint16
	// ConfigSize is the length of the device-specific configuration
	// structure (0: none, and no device configuration capability).
	ConfigSize() int
	// ReadConfig and WriteConfig access it; off >= 0 and off+len(data) <=
	// ConfigSize(). They run on vCPU threads and lock what they share with
	// the device's workers.
	ReadConfig(off int, data []byte)
	WriteConfig(off int, data []byte)
	// Activate starts the device: typically StartWorkers on its ready
	// queues. An error sets DEVICE_NEEDS_RESET.
	Activate(a Activation) error
	// Reset stops every worker of the device (they have returned when
	// Reset returns) and forgets the driver's state. It must be
	// idempotent: the transport calls it on every reset, active or not.
	Reset()
	// Close releases the backend (flushing what must be durable). It is
	// called once, after Reset.
	Close() error
}

// FeatureValidator is implemented by devices that refuse some feature
// combinations; an error keeps FEATURES_OK clear.
type FeatureValidator interface {
	ValidateFeatures(negotiated uint64) error
}

// PCIClasser is implemented by devices that want a PCI class other than
// the one QEMU gives their type (see pciClass).
type PCIClasser interface {
	PCIClass() uint32
}

// Activation is what a device gets when the driver sets DRIVER_OK.
type Activation struct {
	// Mem is guest RAM: every access to a buffer goes through it.
	Mem *memory.Guest
	// Features are the negotiated feature bits.
	Features uint64
	// Queues are all the device's queues by index; Ready reports which
	// ones the driver enabled.
	Queues []*Queue

	t *Transport
}

// ConfigChanged tells the driver the device configuration changed: the
// configuration generation moves and a configuration interrupt is sent.
func (a Activation) ConfigChanged() { a.t.ConfigChanged() }

// Interrupt sends q's used-buffer notification unconditionally (for a
// backend that relays its own call eventfd, such as vhost while MSI-X is
// off).
func (a Activation) Interrupt(q *Queue) { a.t.interrupt(q) }

// CallFD is the eventfd that raises q's MSI-X vector, for a backend that
// signals the guest itself (vhost's VHOST_SET_VRING_CALL). ok is false
// when MSI-X is disabled or the queue has no vector: the backend then
// needs an eventfd of its own, relayed through Interrupt.
func (a Activation) CallFD(q *Queue) (fd int, ok bool) { return a.t.callFD(q) }

// HasFeature reports whether bit f was negotiated.
func (a Activation) HasFeature(f uint64) bool { return a.Features&f == f }
