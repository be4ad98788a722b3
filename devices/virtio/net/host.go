package net

import (
	"time"

	"github.com/kvmm/kvmm/vhost"
)

// Host is the host side of a virtio-net device: a tap or macvtap with one
// queue per queue pair, each carrying frames behind a HdrLen-byte vnet
// header (vhost.Tap through TapHost; tests use fakes). The device does not
// own it: whoever opened it closes it (the VM's vhost.Cleanup), after the
// device has been closed.
type Host interface {
	// Ports are the queues, one per queue pair, for the userspace backend.
	Ports() []Port
	// FDs are the same queues' descriptors, for vhost-net's backends.
	FDs() []int
	// SetOffload enables the offloads the guest can receive, given the
	// virtio-net features it acked (vhost.OffloadFlags).
	SetOffload(features uint64) error
	// SetActiveQueues keeps the first n queues attached, so the host
	// steers no traffic to queue pairs the driver does not use.
	SetActiveQueues(n int) error
}

// Port is one host queue. Every Read returns one frame and every Write
// sends one, header first. Read blocks until a frame arrives or the read
// deadline passes (os.ErrDeadlineExceeded): that is how a device reset
// stops a receive worker without closing the queue.
type Port interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	SetReadDeadline(t time.Time) error
}

// TapHost presents a vhost.Tap (a tap or macvtap kvmm opened) as a Host.
func TapHost(t *vhost.Tap) Host { return tapHost{t} }

type tapHost struct{ t *vhost.Tap }

func (h tapHost) Ports() []Port {
	qs := h.t.Queues()
	ports := make([]Port, len(qs))
	for i, q := range qs {
		ports[i] = q
	}
	return ports
}

func (h tapHost) FDs() []int                       { return h.t.FDs() }
func (h tapHost) SetOffload(features uint64) error { return h.t.SetOffload(features) }
func (h tapHost) SetActiveQueues(n int) error      { return h.t.SetActiveQueues(n) }
