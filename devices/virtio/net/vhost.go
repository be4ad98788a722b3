package net

import (
	"fmt"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/vhost"
)

// vhostPath hands the receive and transmit rings of the pairs in use to
// vhost-net (guest-protocols.md §4): the kernel reads and writes the tap
// queues and the rings itself, woken by the transport's kick eventfds
// (which KVM signals through the queues' ioeventfds, or the transport on
// the MMIO fallback path) and interrupting the guest through each queue's
// MSI-X irqfd eventfd. Where a queue has no MSI-X vector (INTx), vhost
// signals a relay eventfd of the device's instead, whose worker sends the
// interrupt through the transport.
//
// vhost-net keeps running across queue pair changes and MSI-X vector
// changes by a Stop (which reports where each ring stopped) and a Start
// resuming there; a device reset Stops it for good, and the next DRIVER_OK
// Starts it on the driver's new rings from index 0.
type vhostPath struct {
	s     *session
	b     VhostBackend
	fds   []int    // host queue fds by pair
	bases []uint16 // by queue index: where vhost resumes a ring
	// running is the number of pairs vhost-net runs (0: stopped).
	running int
	relay   *virtio.Workers
}

func newVhostPath(s *session) (*vhostPath, error) {
	if s.rx[0] == nil || s.tx[0] == nil {
		return nil, fmt.Errorf("%s: vhost-net needs both queues of the first pair enabled", s.d.name)
	}
	return &vhostPath{s: s, b: s.d.vhost, fds: s.d.host.FDs(), bases: make([]uint16, 2*s.pairs)}, nil
}

func (v *vhostPath) setPairs(n int) error {
	if n == v.running {
		return nil
	}
	return v.restart(n)
}

func (v *vhostPath) vectorChanged() error {
	if v.running == 0 {
		return nil
	}
	return v.restart(v.running)
}

func (v *vhostPath) stop() {
	if err := v.stopBackend(); err != nil {
		v.s.d.warn.Error("virtio-net: stopping vhost-net", "err", err)
	}
}

// restart stops vhost-net if it runs and starts it on pairs 0..n-1.
func (v *vhostPath) restart(n int) error {
	if err := v.stopBackend(); err != nil {
		return err
	}
	return v.start(n)
}

// start builds the vhost.StartConfig of pairs 0..n-1 from the queues as
// the driver set them up and starts vhost-net.
func (v *vhostPath) start(n int) error {
	s := v.s
	cfg := vhost.StartConfig{Memory: s.mem, Features: s.features, TapFDs: v.fds[:n]}
	var relays []virtio.Source
	for p := 0; p < n; p++ {
		for _, q := range []*virtio.Queue{s.rx[p], s.tx[p]} {
			l := q.Layout()
			call, ok := s.a.CallFD(q)
			if !ok {
				r, err := s.d.relayFor(q.Index())
				if err != nil {
					return fmt.Errorf("%s: call relay of queue %d: %w", s.d.name, q.Index(), err)
				}
				r.Drain() // a signal from before the last Stop is no news
				call = r.FD()
				relays = append(relays, relaySource(s.a, r, q))
			}
			cfg.Queues = append(cfg.Queues, vhost.QueueConfig{
				Size: l.Size, DescGPA: l.Desc, AvailGPA: l.Driver, UsedGPA: l.Device,
				LastAvailIdx: v.bases[q.Index()],
				KickFD:       q.Kick().FD(),
				CallFD:       call,
			})
		}
	}
	if len(relays) > 0 {
		v.relay = virtio.StartWorkers(s.d.log, relays...)
	}
	if err := v.b.Start(cfg); err != nil {
		v.relay.Stop()
		v.relay = nil
		return fmt.Errorf("%s: starting vhost-net on %d queue pairs: %w", s.d.name, n, err)
	}
	s.d.m.vhostStarts.Add(1)
	v.running = n
	return nil
}

// stopBackend stops vhost-net and keeps where each ring stopped.
func (v *vhostPath) stopBackend() error {
	if v.running == 0 {
		return nil
	}
	bases, err := v.b.Stop()
	v.s.d.m.vhostStops.Add(1)
	// Stop returns one base per queue of the last Start, in queue order:
	// queue indexes 0..2*running-1.
	copy(v.bases, bases)
	v.running = 0
	v.relay.Stop()
	v.relay = nil
	if err != nil {
		return fmt.Errorf("%s: stopping vhost-net: %w", v.s.d.name, err)
	}
	return nil
}

// relaySource forwards vhost's signals on relay to q's interrupt. Workers
// run a handler once at start, before any signal: that call is skipped,
// so the guest gets no interrupt vhost did not ask for.
func relaySource(a virtio.Activation, relay *virtio.EventFD, q *virtio.Queue) virtio.Source {
	started := false
	return virtio.Source{Event: relay, Handle: func() {
		if !started {
			started = true
			return
		}
		a.Interrupt(q)
	}}
}
