// Package rng is virtio-rng (virtio entropy device, type 4, spec §5.4):
// one request queue whose device-writable buffers the device fills from
// the host kernel's getrandom(2).
package rng

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/memory"
)

const (
	// QueueSize is the request queue's maximum size.
	QueueSize = 256
	// MaxBytesPerRequest bounds what one request gets, so a guest asking
	// for gigabytes costs the host a bounded amount of work per buffer
	// (Linux asks for at most a few hundred bytes at a time).
	MaxBytesPerRequest = 64 << 10
)

// Source fills a buffer with random bytes (unix.Getrandom by default).
type Source func(b []byte) (int, error)

// Config describes the device.
type Config struct {
	// Source defaults to getrandom(2) without flags.
	Source Source
	Log    *slog.Logger
}

// Device is a virtio-rng device.
type Device struct {
	src  Source
	log  *slog.Logger
	warn *virtio.RateLimitedLog
	m    metrics

	mu      sync.Mutex
	workers virtio.WorkerSlot
}

// New returns a device.
func New(c Config) *Device {
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	src := c.Source
	if src == nil {
		src = func(b []byte) (int, error) { return unix.Getrandom(b, 0) }
	}
	return &Device{src: src, log: log, warn: virtio.NewRateLimitedLog(log, virtio.DefaultLogInterval)}
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeRNG }

// Features implements virtio.Device: no device-specific features.
func (d *Device) Features() uint64 { return virtio.RingFeatures }

// QueueSizes implements virtio.Device.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize} }

// ConfigSize implements virtio.Device: virtio-rng has no configuration.
func (d *Device) ConfigSize() int { return 0 }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(int, []byte) {}

// WriteConfig implements virtio.Device.
func (d *Device) WriteConfig(int, []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	q := a.Queues[0]
	if !q.Ready() {
		return nil
	}
	var c virtio.Chain
	mem := a.Mem
	d.mu.Lock()
	defer d.mu.Unlock()
	d.workers.Start(d.log, virtio.QueueSource(q, func(q *virtio.Queue) {
		_ = q.Drain(&c, func(c *virtio.Chain) (uint32, error) { return d.Fill(mem, c), nil })
	}))
	return nil
}

// Reset implements virtio.Device.
func (d *Device) Reset() {
	// Outside d.mu: the workers take it, and Stop waits for them.
	d.workers.Stop()
}

// Close implements virtio.Device.
func (d *Device) Close() error {
	d.Reset()
	return nil
}

// Fill writes random bytes into c's writable buffers, at most
// MaxBytesPerRequest, and returns how many. Readable buffers are ignored
// (the spec gives them no meaning). A host failure returns what was
// written so far: the guest sees a short answer, never stale memory
// counted as random.
func (d *Device) Fill(mem *memory.Guest, c *virtio.Chain) uint32 {
	d.m.requests.Add(1)
	w := c.NewWriter(mem)
	bufs, _ := w.Slices(min(c.WriteLen, MaxBytesPerRequest), nil)
	var n uint32
	for _, b := range bufs {
		got, err := d.fill(b)
		n += uint32(got)
		if err != nil {
			d.m.errors.Add(1)
			d.warn.Warn("virtio-rng: getrandom failed", "err", err)
			break
		}
	}
	d.m.bytes.Add(uint64(n))
	return n
}

func (d *Device) fill(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := d.src(b[done:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, err
		}
		if n <= 0 {
			return done, fmt.Errorf("getrandom returned %d bytes", n)
		}
		done += n
	}
	return done, nil
}
