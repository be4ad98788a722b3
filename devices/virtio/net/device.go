// Package net is kvmm's virtio-net device (virtio v1.2 §5.1, device ID 1)
// on the virtio-pci transport of devices/virtio: a NIC whose host side is a
// tap or macvtap (Host), with two data paths:
//
//   - the userspace backend (always available): per queue pair a transmit
//     worker (kick -> chains -> one write per frame on the tap queue) and
//     a receive worker (tap readable -> frame into the guest's receive
//     buffers, merged over several with MRG_RXBUF). A frame that finds no
//     buffers waits, and the tap is not read until the driver adds some:
//     back-pressure, as QEMU and vhost-net apply it, and no polling;
//   - vhost-net (VhostBackend, the kernel runs the rx/tx rings): at
//     DRIVER_OK the device hands it the rings' guest addresses, the
//     transport's kick eventfds (KVM ioeventfds) and the MSI-X vectors'
//     irqfd eventfds, and stops it on every reset.
//
// Either way the control queue (multiqueue pair changes, guest offload
// changes) is served here, since vhost-net does not implement it, and the
// offloads the driver accepted are applied to the tap (TUNSETOFFLOAD).
//
// The queues are receiveq1, transmitq1, ..., receiveqN, transmitqN, then
// the control queue. Which index is the control queue depends on the
// negotiation (spec §5.1.2): 2N with VIRTIO_NET_F_MQ, else 2.
package net

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/memory"
	"github.com/kvmm/kvmm/vhost"
)

// MAC is an Ethernet address.
type MAC [6]byte

func (m MAC) String() string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 17)
	for i, c := range m {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[c>>4], hex[c&0xF])
	}
	return string(b)
}

// VhostBackend is the in-kernel data path: *vhost.NetBackend, or a test
// double. The device calls Start at DRIVER_OK (and again after each Stop
// when it re-wires queues or interrupts), Stop on reset; it never closes
// it: the backend belongs to whoever opened it, like the Host.
type VhostBackend interface {
	// Features are the ring and transport features the kernel
	// implements (within vhost.PassthroughFeatures, as bit masks).
	Features() uint64
	Start(cfg vhost.StartConfig) error
	Stop() (bases []uint16, err error)
}

// Config builds a Net.
type Config struct {
	// MAC is the guest's address (config.mac).
	MAC MAC
	// Host is the tap or macvtap: one queue per queue pair.
	Host Host
	// Vhost, when set, runs the data path in the kernel; nil uses the
	// userspace backend.
	Vhost VhostBackend
	// QueueSize is every queue's maximum size (0: DefaultQueueSize).
	QueueSize uint16
	// Name labels errors ("virtio-net0").
	Name string
	// Log receives the device's logs, with whatever attributes the
	// caller gave it (slog.Default() when nil).
	Log *slog.Logger
}

// Net is a virtio-net device model (a virtio.Device).
type Net struct {
	name      string
	log       *slog.Logger
	warn      *virtio.RateLimitedLog
	mac       MAC
	host      Host
	ports     []Port
	vhost     VhostBackend
	pairs     int // maximum queue pairs (host queues)
	queueSize uint16
	offered   uint64
	m         metrics

	mu     sync.Mutex
	sess   *session          // the driver's current activation; nil while reset
	relays []*virtio.EventFD // vhost call relays by queue index, created on first use
	closed bool
}

var _ virtio.Device = (*Net)(nil)

// New builds the device. It asks the host which receive offloads it takes
// (TUNSETOFFLOAD with UFO) and leaves the host's offloads off until a
// driver accepts some.
func New(c Config) (*Net, error) {
	name := c.Name
	if name == "" {
		name = "virtio-net"
	}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	if c.Host == nil {
		return nil, fmt.Errorf("%s: no host interface", name)
	}
	d := &Net{name: name, log: log, warn: virtio.NewRateLimitedLog(log, virtio.DefaultLogInterval),
		mac: c.MAC, host: c.Host, ports: c.Host.Ports(), vhost: c.Vhost, queueSize: c.QueueSize}
	d.pairs = len(d.ports)
	if d.pairs < 1 || d.pairs > MaxQueuePairs {
		return nil, fmt.Errorf("%s: %d host queues, want 1..%d", name, d.pairs, MaxQueuePairs)
	}
	if d.queueSize == 0 {
		d.queueSize = DefaultQueueSize
	}
	if c.MAC[0]&1 != 0 || c.MAC == (MAC{}) {
		return nil, fmt.Errorf("%s: MAC %s is not a unicast address", name, c.MAC)
	}
	d.offered = virtio.RingFeatures | FeatureMAC | FeatureStatus | FeatureMrgRxbuf |
		FeatureCtrlVQ | FeatureCtrlGuestOffloads |
		FeatureCsum | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN |
		FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN
	if d.pairs > 1 {
		d.offered |= FeatureMQ
	}
	// UFO both ways only where the tap takes it (QEMU's peer_has_ufo):
	// the kernel refuses TUNSETOFFLOAD flags it does not know.
	if err := c.Host.SetOffload(FeatureGuestCsum | FeatureGuestUFO); err == nil {
		d.offered |= FeatureGuestUFO | FeatureHostUFO
	}
	if err := c.Host.SetOffload(0); err != nil {
		return nil, fmt.Errorf("%s: clearing the host's offloads: %w", name, err)
	}
	if d.vhost != nil {
		if fds := c.Host.FDs(); len(fds) != d.pairs {
			return nil, fmt.Errorf("%s: %d host queue fds for %d queue pairs", name, len(fds), d.pairs)
		}
		// Ring features are vhost's to implement: offer none the kernel
		// lacks (vhost.PassthroughFeatures uses the same bit numbers).
		ring := uint64(virtio.RingFeatures | FeatureMrgRxbuf)
		d.offered &^= ring &^ d.vhost.Features()
		if d.offered&virtio.FeatureVersion1 == 0 {
			return nil, fmt.Errorf("%s: this kernel's vhost-net lacks VIRTIO_F_VERSION_1", name)
		}
	}
	return d, nil
}

// Type implements virtio.Device.
func (d *Net) Type() virtio.DeviceType { return virtio.TypeNet }

// Features implements virtio.Device.
func (d *Net) Features() uint64 { return d.offered }

// QueueSizes implements virtio.Device: a receive and a transmit queue per
// pair, then the control queue.
func (d *Net) QueueSizes() []uint16 {
	sizes := make([]uint16, 2*d.pairs+1)
	for i := range sizes {
		sizes[i] = d.queueSize
	}
	return sizes
}

// ConfigSize implements virtio.Device.
func (d *Net) ConfigSize() int { return configLen }

// ReadConfig implements virtio.Device: mac, status (the link is always
// up: the tap's carrier follows kvmm's open fd) and max_virtqueue_pairs.
func (d *Net) ReadConfig(off int, data []byte) {
	var img [configLen]byte
	copy(img[configMACOff:], d.mac[:])
	img[configStatusOff] = StatusLinkUp
	img[configMaxPairsOff] = byte(d.pairs)
	img[configMaxPairsOff+1] = byte(d.pairs >> 8)
	copy(data, img[off:])
}

// WriteConfig implements virtio.Device. Every field is read-only for a
// VERSION_1 driver (the MAC changes through the control queue, which kvmm
// does not offer), so writes are ignored.
func (d *Net) WriteConfig(int, []byte) {}

// ValidateFeatures implements virtio.FeatureValidator: the dependencies of
// spec §5.1.3.1.
func (d *Net) ValidateFeatures(f uint64) error {
	for _, dep := range featureDeps {
		if f&dep.feature == 0 {
			continue
		}
		if (dep.anyOf && f&dep.needs == 0) || (!dep.anyOf && f&dep.needs != dep.needs) {
			return fmt.Errorf("feature %#x needs %#x, which the driver did not accept", dep.feature, dep.needs)
		}
	}
	return nil
}

// MAC is the guest's address.
func (d *Net) MAC() MAC { return d.mac }

// Pairs is the number of queue pairs the device offers.
func (d *Net) Pairs() int { return d.pairs }

// Vhost reports whether the device runs on vhost-net.
func (d *Net) Vhost() bool { return d.vhost != nil }

// Metrics returns the device's counters.
func (d *Net) Metrics() Metrics { return d.m.snapshot() }

// Activate implements virtio.Device: assign the queues their roles, apply
// the accepted offloads to the host, and start the data path with one
// queue pair in use (the driver asks for more with VQ_PAIRS_SET).
func (d *Net) Activate(a virtio.Activation) error {
	// The transport serialises Activate, Reset and Close; d.mu guards
	// the session against QueueVectorChanged and is not held while the
	// session starts (which takes it for the relays).
	d.mu.Lock()
	closed, busy := d.closed, d.sess != nil
	d.mu.Unlock()
	if closed {
		return fmt.Errorf("%s: activation after Close", d.name)
	}
	if busy {
		return fmt.Errorf("%s: activation while active", d.name)
	}
	s, err := d.newSession(a)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.sess = s
	d.mu.Unlock()
	return nil
}

// Reset implements virtio.Device: stop every worker (and vhost-net) and
// turn the host's offloads off until the next driver accepts some. It
// returns when nothing touches the queues any more.
func (d *Net) Reset() {
	d.mu.Lock()
	s := d.sess
	d.sess = nil
	d.mu.Unlock()
	if s == nil {
		return
	}
	s.stop()
	if err := d.host.SetOffload(0); err != nil {
		d.warn.Warn("virtio-net: clearing the host's offloads on reset", "err", err)
	}
}

// Close implements virtio.Device. The host interface and the vhost
// backend belong to the caller; the device closes only what it created.
func (d *Net) Close() error {
	d.Reset()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	var errs []error
	for _, e := range d.relays {
		if e != nil {
			errs = append(errs, e.Close())
		}
	}
	d.relays = nil
	return errors.Join(errs...)
}

// relayFor returns queue qi's call relay eventfd, creating it on first
// use; relays live as long as the device, across resets.
func (d *Net) relayFor(qi int) (*virtio.EventFD, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("%s: closed", d.name)
	}
	if len(d.relays) <= qi {
		d.relays = append(d.relays, make([]*virtio.EventFD, qi+1-len(d.relays))...)
	}
	if d.relays[qi] == nil {
		e, err := virtio.NewEventFD()
		if err != nil {
			return nil, err
		}
		d.relays[qi] = e
	}
	return d.relays[qi], nil
}

// dataPath is the userspace backend or vhost-net for one session.
type dataPath interface {
	// setPairs makes queue pairs 0..n-1 carry traffic.
	setPairs(n int) error
	// vectorChanged re-wires the interrupts after an MSI-X vector change.
	vectorChanged() error
	// stop ends the data path; nothing touches the queues afterwards.
	stop()
}

// session is one activation: from DRIVER_OK to the next reset.
type session struct {
	d        *Net
	a        virtio.Activation
	mem      *memory.Guest
	features uint64
	// offloads are the GUEST_* features in force, which the control
	// queue can change while receive workers read them.
	offloads atomic.Uint64
	pairs    int             // queue pairs the driver may use (1 without MQ)
	rx, tx   []*virtio.Queue // by pair; nil where the driver did not enable the queue
	ctrl     *virtio.Queue   // nil without CTRL_VQ
	ctrlW    *virtio.Workers // the control queue's worker
	chain    virtio.Chain    // control queue scratch (its worker only)
	mu       sync.Mutex      // serialises pair and interrupt changes with stop
	active   int             // queue pairs in use
	path     dataPath
	stopped  bool
}

func (d *Net) newSession(a virtio.Activation) (*session, error) {
	s := &session{d: d, a: a, mem: a.Mem, features: a.Features, pairs: 1}
	s.offloads.Store(a.Features & guestOffloads)
	if a.HasFeature(FeatureMQ) {
		s.pairs = d.pairs
	}
	ready := func(i int) *virtio.Queue {
		if i < len(a.Queues) && a.Queues[i].Ready() {
			return a.Queues[i]
		}
		return nil
	}
	for p := 0; p < s.pairs; p++ {
		s.rx = append(s.rx, ready(2*p))
		s.tx = append(s.tx, ready(2*p+1))
	}
	if a.HasFeature(FeatureCtrlVQ) {
		s.ctrl = ready(2 * s.pairs)
	}
	if err := d.host.SetOffload(a.Features & guestOffloads); err != nil {
		return nil, fmt.Errorf("%s: host offloads for features %#x: %w", d.name, a.Features, err)
	}
	if d.vhost != nil {
		vp, err := newVhostPath(s)
		if err != nil {
			return nil, err
		}
		s.path = vp
	} else {
		s.path = newUserPath(s)
	}
	if err := s.setPairs(1); err != nil {
		s.path.stop()
		return nil, err
	}
	if s.ctrl != nil {
		s.ctrlW = virtio.StartWorkers(d.log, virtio.QueueSource(s.ctrl, s.handleCtrl))
	}
	d.log.Debug("virtio-net active", "features", fmt.Sprintf("%#x", a.Features), "pairs", s.pairs,
		"ctrl", s.ctrl != nil, "vhost", d.vhost != nil)
	return s, nil
}

// setPairs puts queue pairs 0..n-1 in use: the host attaches their queues
// and the data path serves them. Growing attaches before serving,
// shrinking stops serving before detaching, so the host never steers
// frames to a queue nobody reads.
func (s *session) setPairs(n int) error {
	if n < 1 || n > s.pairs {
		return fmt.Errorf("%d queue pairs, want 1..%d", n, s.pairs)
	}
	if n > 1 {
		for p := 0; p < n; p++ {
			if s.rx[p] == nil || s.tx[p] == nil {
				return fmt.Errorf("%d queue pairs: the driver did not enable both queues of pair %d", n, p)
			}
		}
	}
	if n >= s.active {
		if err := s.d.host.SetActiveQueues(n); err != nil {
			return err
		}
	}
	if err := s.path.setPairs(n); err != nil {
		return err
	}
	if n < s.active {
		if err := s.d.host.SetActiveQueues(n); err != nil {
			return err
		}
	}
	s.active = n
	return nil
}

// stop ends the session: the control worker first (it may be changing
// pairs), then the data path.
func (s *session) stop() {
	s.ctrlW.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	s.path.stop()
}

// QueueVectorChanged implements virtio.VectorWatcher: a driver moved a
// queue to another MSI-X vector while the device runs, so vhost-net must
// signal the new vector's eventfd.
func (d *Net) QueueVectorChanged(*virtio.Queue) {
	d.mu.Lock()
	s := d.sess
	d.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if err := s.path.vectorChanged(); err != nil {
		s.fail(fmt.Errorf("re-wiring interrupts after an MSI-X vector change: %w", err))
	}
}

// fail reports an error the device cannot recover from: DEVICE_NEEDS_RESET
// through whichever queue is at hand.
func (s *session) fail(err error) {
	for _, q := range s.a.Queues {
		if q.Ready() {
			q.Fail(err)
			return
		}
	}
	s.d.warn.Error("virtio-net: device error", "err", err)
}
