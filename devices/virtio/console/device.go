// Package console is virtio-console (type 3, spec §5.3) with a single
// port: receiveq (queue 0) carries host input to the guest, transmitq
// (queue 1) the guest's output to the host. kvmm uses it as the VM's
// console instead of the UART (`--console virtio`): the writer is the
// terminal, Enqueue is what the terminal typed.
package console

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/memory"
)

// Feature bits (spec §5.3.3).
const (
	FeatureSize       = 1 << 0
	FeatureMultiport  = 1 << 1
	FeatureEmergWrite = 1 << 2
)

const (
	// RxQueue and TxQueue are port 0's queues.
	RxQueue = 0
	TxQueue = 1
	// QueueSize is each queue's maximum size.
	QueueSize = 128
	// InputBufferSize bounds the input waiting for the guest to post
	// receive buffers; Enqueue accepts no more (the caller retries, as
	// with the UART's FIFO).
	InputBufferSize = 4096
	// struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr.
	cfgMaxPorts = 4
	cfgEmergWr  = 8
	configSize  = 12
	// txChunk is the copy buffer between guest memory and the writer.
	txChunk = 4096
)

// Config describes the console.
type Config struct {
	// Output receives what the guest writes (nil discards it).
	Output io.Writer
	Log    *slog.Logger
}

// Device is a virtio console.
type Device struct {
	out   io.Writer
	log   *slog.Logger
	warn  *virtio.RateLimitedLog
	input *virtio.EventFD // signalled by Enqueue
	m     metrics

	outMu sync.Mutex // one writer at a time: the transmit worker, emerg_wr
	rxMu  sync.Mutex // one delivery at a time: the rx worker, the input worker

	mu      sync.Mutex
	pending []byte
	rx      *virtio.Queue
	mem     *memory.Guest
	workers virtio.WorkerSlot
	closed  bool
}

// New returns a console.
func New(c Config) (*Device, error) {
	out := c.Output
	if out == nil {
		out = io.Discard
	}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	ev, err := virtio.NewEventFD()
	if err != nil {
		return nil, fmt.Errorf("virtio-console: %w", err)
	}
	return &Device{out: out, log: log, warn: virtio.NewRateLimitedLog(log, virtio.DefaultLogInterval), input: ev}, nil
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeConsole }

// Features implements virtio.Device: one port, and the emergency write
// register (early output before the queues exist).
func (d *Device) Features() uint64 { return virtio.RingFeatures | FeatureEmergWrite }

// QueueSizes implements virtio.Device.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// ConfigSize implements virtio.Device.
func (d *Device) ConfigSize() int { return configSize }

// ReadConfig implements virtio.Device: no size (F_SIZE is not offered),
// one port, emerg_wr reads as zero.
func (d *Device) ReadConfig(off int, data []byte) {
	var c [configSize]byte
	binary.LittleEndian.PutUint32(c[cfgMaxPorts:], 1)
	copy(data, c[off:])
}

// WriteConfig implements virtio.Device: a write to emerg_wr outputs its
// low byte (spec §5.3.4).
func (d *Device) WriteConfig(off int, data []byte) {
	if off == cfgEmergWr && len(data) >= 1 {
		d.m.emergWrites.Add(1)
		d.output(data[:1])
	}
}

// Enqueue queues host input for the guest and returns how many bytes were
// accepted (the rest should be offered again later).
func (d *Device) Enqueue(b []byte) int {
	d.mu.Lock()
	n := min(len(b), InputBufferSize-len(d.pending))
	d.pending = append(d.pending, b[:n]...)
	closed := d.closed
	d.mu.Unlock()
	if n > 0 && !closed {
		if err := d.input.Signal(); err != nil {
			d.warn.Warn("virtio-console: signalling input", "err", err)
		}
	}
	return n
}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	rx, tx := a.Queues[RxQueue], a.Queues[TxQueue]
	mem := a.Mem
	var srcs []virtio.Source
	if tx.Ready() {
		var c virtio.Chain
		buf := make([]byte, txChunk)
		srcs = append(srcs, virtio.QueueSource(tx, func(q *virtio.Queue) {
			_ = q.Drain(&c, func(c *virtio.Chain) (uint32, error) {
				d.transmit(mem, c, buf)
				return 0, nil
			})
		}))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("virtio-console: closed")
	}
	if rx.Ready() {
		d.rx, d.mem = rx, mem
		srcs = append(srcs, virtio.QueueSource(rx, func(*virtio.Queue) { d.deliver() }),
			virtio.Source{Event: d.input, Handle: d.deliver})
	}
	d.workers.Start(d.log, srcs...)
	return nil
}

// transmit copies a transmit chain's bytes to the output.
func (d *Device) transmit(mem *memory.Guest, c *virtio.Chain, buf []byte) {
	r := c.NewReader(mem)
	for r.Len() > 0 {
		n, err := r.Read(buf)
		if n > 0 {
			d.output(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (d *Device) output(b []byte) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	d.m.txBytes.Add(uint64(len(b)))
	if _, err := d.out.Write(b); err != nil {
		d.m.txErrors.Add(1)
		d.warn.Warn("virtio-console: output", "err", err)
	}
}

// deliver moves pending input into the guest's receive buffers until
// either runs out.
func (d *Device) deliver() {
	d.rxMu.Lock()
	defer d.rxMu.Unlock()
	d.mu.Lock()
	q, mem := d.rx, d.mem
	d.mu.Unlock()
	if q == nil {
		return
	}
	var c virtio.Chain
	for {
		d.mu.Lock()
		empty := len(d.pending) == 0
		d.mu.Unlock()
		if empty {
			q.Notify()
			return
		}
		ok, err := q.Pop(&c)
		if err != nil {
			return // the transport set NEEDS_RESET
		}
		if !ok {
			q.Notify()
			if q.EnableNotify() {
				continue // buffers arrived meanwhile
			}
			return // the guest's next receive buffer kicks us
		}
		w := c.NewWriter(mem)
		d.mu.Lock()
		n := min(uint32(len(d.pending)), w.Len())
		_, _ = w.Write(d.pending[:n])
		d.pending = d.pending[n:]
		d.mu.Unlock()
		d.m.rxBytes.Add(uint64(n))
		if err := q.Push(c.Head, w.Written()); err != nil {
			d.warn.Warn("virtio-console: receive", "err", err)
			return
		}
	}
}

// Reset implements virtio.Device. Input not delivered yet stays for the
// next driver.
func (d *Device) Reset() {
	// Outside d.mu: the workers take it, and Stop waits for them.
	d.workers.Stop()
	d.mu.Lock()
	d.rx, d.mem = nil, nil
	d.mu.Unlock()
}

// Close implements virtio.Device.
func (d *Device) Close() error {
	d.Reset()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.input.Close()
}
