// Package virtio is kvmm's virtio 1.x implementation: split virtqueues
// (descriptor chains with indirect tables and event-index suppression) and
// the modern PCI transport. Device models live in sub-packages, one
// folder each in the Firecracker layout (device.go, metrics.go, tests):
// blk, rng, console; net and balloon build on the same API.
//
// A device model implements Device. NewTransport wraps it in a PCI
// function (vendor 0x1AF4, device 0x1040+type, revision 1) whose BAR 4
// holds the common configuration, ISR, device configuration and
// notification regions, with the capabilities that point at them plus
// the PCI configuration access capability, and whose BAR 1 holds the
// MSI-X table (one vector per queue plus one for configuration changes).
// The transport negotiates features (VIRTIO_F_VERSION_1 required;
// features the device did not offer keep FEATURES_OK clear), runs the
// status state machine and, at DRIVER_OK, validates the enabled queues,
// registers one ioeventfd per queue notification address (following the
// BAR when the guest moves it) and calls Device.Activate. A write of 0 to
// device_status calls Device.Reset, which stops the device's workers, and
// forgets everything, so a driver can set the device up again (Linux does
// on every resume from S3).
//
// A typical device activates like this:
//
//	func (d *Dev) Activate(a virtio.Activation) error {
//		d.mem, q := a.Mem, a.Queues[0]
//		d.workers = virtio.StartWorkers(d.log, virtio.QueueSource(q, func(q *virtio.Queue) {
//			_ = q.Drain(&d.chain, d.handle) // Pop, handle, Push, Notify, EnableNotify
//		}))
//		return nil
//	}
//	func (d *Dev) Reset() { d.workers.Stop(); d.workers = nil }
//
// Each Queue has a kick EventFD, signalled by KVM through the ioeventfd or
// by the transport when a notification arrives as an MMIO exit; the
// worker waits on it through the Go poller. Queue.Pop returns a validated
// Chain: every buffer lies in guest RAM (memory.Guest), chains are
// bounded by the queue size and indirect tables by MaxIndirectDescs, and
// readable buffers come before writable ones. Anything else — a head or
// next index past the queue, a loop, a nested indirect table, an
// address outside RAM, a length that wraps, an available index that
// jumps by more than the queue size — sets DEVICE_NEEDS_RESET, raises the
// configuration interrupt and logs (rate-limited); a device that finds a
// request it cannot even answer calls Queue.Fail. Used elements are
// written before the used index, which is published with an atomic store;
// Queue.Notify interrupts through the queue's MSI-X vector, or INTx with
// ISR bit 0 while MSI-X is off.
//
// For vhost (a kernel backend that runs the rings itself) a device uses
// Queue.Layout (guest addresses of the rings), Queue.AvailIdx,
// Queue.Kick().FD() (the kick eventfd KVM signals) and
// Activation.CallFD (the MSI-X vector's irqfd eventfd), and starts no
// workers.
package virtio
