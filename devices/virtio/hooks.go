package virtio

// VectorWatcher is implemented by a device whose backend interrupts the
// guest itself through Activation.CallFD (vhost-net): that eventfd belongs
// to the queue's MSI-X vector, so when the driver moves an active queue to
// another vector the backend must be handed the new one. Rewrites of a
// vector's table entry (address, data, mask) need nothing: the vector's
// eventfd stays and pci.MSIX follows them. Linux sets queue vectors before
// DRIVER_OK and never changes them while the device runs; another driver
// may.
type VectorWatcher interface {
	// QueueVectorChanged runs on the vCPU thread that wrote
	// queue_msix_vector, with the transport's lock held: it must not
	// access the transport's registers.
	QueueVectorChanged(q *Queue)
}

// vectorChanged tells a VectorWatcher device that the driver gave q a
// different vector while the device is active (t.mu held).
func (t *Transport) vectorChanged(q *Queue, old uint16) {
	if !t.active || q.Vector() == old || !q.Ready() {
		return
	}
	if w, ok := t.dev.(VectorWatcher); ok {
		w.QueueVectorChanged(q)
	}
}
