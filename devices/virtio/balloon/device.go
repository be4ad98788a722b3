// Package balloon is virtio-balloon (virtio memory balloon, type 5, spec
// §5.5), the standard balloon of KVM guests, written against Linux v6.1's
// drivers/virtio/virtio_balloon.c and checked against QEMU's
// virtio-balloon-pci:
//
//   - the configuration: num_pages, the target in 4 KiB pages, written by
//     the host (a configuration interrupt when it changes); actual, what
//     the driver holds, written by the driver after each round;
//   - the inflate and deflate queues: arrays of 32-bit PFNs the guest gives
//     up or takes back, handed to the shared balloon.Ledger (package
//     kvmm/balloon, also the VMware balloon's accounting), which checks
//     each page is RAM, keeps the held set and gives inflated memory back
//     to the host (Memory.Discard: madvise MADV_DONTNEED, the process RSS
//     drops);
//   - the statistics queue (VIRTIO_BALLOON_F_STATS_VQ): the device keeps
//     the one buffer the driver gives it and returns it when the host
//     wants fresh statistics (RequestStats); the driver refills it with
//     tag/value pairs (free, available, total memory, faults, swap);
//   - free page reporting (VIRTIO_BALLOON_F_REPORTING): scatter-gather
//     lists of free ranges, each given back to the host at once and
//     counted as reported, not ballooned (the guest keeps the pages);
//   - VIRTIO_BALLOON_F_DEFLATE_ON_OOM, offered: the guest deflates by
//     itself under memory pressure, and the device accounts it as any
//     deflate.
//
// A device reset (status 0, which Linux writes on driver unload and on
// every resume from S3) forgets the held pages, as the guest does; their
// memory stays with the host until the guest touches it again. Every guest
// value is checked: a PFN outside RAM is refused and counted, a malformed
// buffer is counted and used as far as it makes sense, never a panic.
package balloon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	accounting "github.com/kvmm/kvmm/balloon"
	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/memory"
)

// Commands names what the device counts in the ledger's Stats.Commands,
// indexed by the cmd* constants: the buffers served on each queue.
var Commands = []string{
	cmdInflate: "inflate",
	cmdDeflate: "deflate",
	cmdStats:   "stats",
	cmdReport:  "report",
}

const (
	cmdInflate = iota
	cmdDeflate
	cmdStats
	cmdReport
)

// ErrNoStats is returned by RequestStats when the guest's driver has no
// statistics queue (not loaded, or STATS_VQ not negotiated).
var ErrNoStats = errors.New("the guest's balloon driver has no statistics queue")

// pfnChunk is how much of a PFN array a worker reads out of guest memory at
// a time: 1024 PFNs, four times what Linux sends in one buffer.
const pfnChunk = 4096

// Config describes a device.
type Config struct {
	// Ledger is the balloon's accounting: the target, the held pages and
	// the counters. Required; it must have been made with Commands over
	// the guest's RAM.
	Ledger *accounting.Ledger
	Log    *slog.Logger
}

// Device is a virtio-balloon device.
type Device struct {
	ledger *accounting.Ledger
	log    *slog.Logger
	warn   *virtio.RateLimitedLog
	m      metrics

	mu       sync.Mutex
	workers  virtio.WorkerSlot
	act      *virtio.Activation // nil until DRIVER_OK and after a reset
	features uint64             // negotiated, while active
	actual   uint32
	report   bool          // the reporting queue is running
	stats    *virtio.Queue // the statistics queue while the driver has one
	closing  bool          // Shutdown: the next reset is the machine's end
	held     bool          // the device holds the driver's statistics buffer
	heldHead uint16
	guest    GuestStats
	// statsWake is closed, and replaced, whenever the driver sends
	// statistics or the device resets: what RequestStats waits on.
	statsWake chan struct{}
}

// GuestStats are the memory statistics the guest's driver last sent.
type GuestStats struct {
	// Values by StatName: free_memory, available_memory, total_memory,
	// disk_caches, swap_in, swap_out (bytes), major_faults, minor_faults,
	// hugetlb_allocations, hugetlb_failures (counts), ... Only the tags the
	// guest sent are there (Linux 6.1 sends 10).
	Values map[string]uint64 `json:"values"`
	// Updated is when the device received them; Updates counts the
	// buffers received since the device was created.
	Updated time.Time `json:"updated"`
	Updates uint64    `json:"updates"`
	// Fresh: the guest sent them in answer to this request. False when it
	// did not answer within the wait: they are the last it sent.
	Fresh bool `json:"fresh"`
}

// State is the device's side of the balloon (the ledger has the rest).
type State struct {
	// Active: the driver set DRIVER_OK and has not reset the device.
	Active bool `json:"active"`
	// Features are the negotiated feature bits (0 while inactive).
	Features uint64 `json:"features"`
	// NumPages is the configuration's num_pages: the target in 4 KiB
	// pages. Actual is what the driver last wrote to actual: the pages it
	// says it holds.
	NumPages uint32 `json:"num_pages"`
	Actual   uint32 `json:"actual"`
	// StatsQueue and ReportingQueue report which optional queues run.
	StatsQueue     bool `json:"stats_queue"`
	ReportingQueue bool `json:"reporting_queue"`
	Metrics
	// GuestStats are the guest's memory statistics; nil until the driver
	// sent some.
	GuestStats *GuestStats `json:"guest_stats,omitempty"`
}

// New returns a device over c.Ledger.
func New(c Config) (*Device, error) {
	if c.Ledger == nil {
		return nil, errors.New("virtio-balloon: a Ledger is required")
	}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	return &Device{ledger: c.Ledger, log: log, warn: virtio.NewRateLimitedLog(log, virtio.DefaultLogInterval),
		statsWake: make(chan struct{})}, nil
}

// Ledger is the balloon's accounting.
func (d *Device) Ledger() *accounting.Ledger { return d.ledger }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBalloon }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	return virtio.RingFeatures | FeatureStatsVQ | FeatureDeflateOnOOM | FeatureReporting
}

// QueueSizes implements virtio.Device: inflate, deflate, stats, reporting
// (without STATS_VQ the reporting queue is the third, and larger).
func (d *Device) QueueSizes() []uint16 {
	return []uint16{QueueSize, QueueSize, QueueSize, ReportingQueueSize}
}

// ConfigSize implements virtio.Device.
func (d *Device) ConfigSize() int { return configSize }

// config lays out struct virtio_balloon_config.
func (d *Device) config() [configSize]byte {
	var b [configSize]byte
	le32(b[ConfigNumPages:], d.numPages())
	d.mu.Lock()
	le32(b[ConfigActual:], d.actual)
	d.mu.Unlock()
	return b
}

// numPages is the target in 4 KiB pages. SetTarget keeps it within 32
// bits; a ledger target set behind the device's back is clamped.
func (d *Device) numPages() uint32 {
	return uint32(min(d.ledger.Target()>>PFNShift, math.MaxUint32))
}

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off int, data []byte) {
	b := d.config()
	copy(data, b[off:])
}

// WriteConfig implements virtio.Device: the driver writes actual (Linux:
// update_balloon_size after every round); num_pages is the device's and
// ignores writes.
func (d *Device) WriteConfig(off int, data []byte) {
	end := off + len(data)
	if end <= ConfigActual {
		return
	}
	d.mu.Lock()
	var b [4]byte
	le32(b[:], d.actual)
	for i := max(off, ConfigActual); i < end; i++ {
		b[i-ConfigActual] = data[i-off]
	}
	d.actual = uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
	d.mu.Unlock()
	d.m.actualUpdates.Add(1)
}

// SetTarget sets the balloon's size in bytes (the ledger checks it: a
// multiple of 4 KiB, at most the guest's RAM) and tells a running driver
// with a configuration interrupt. Before DRIVER_OK there is nobody to
// tell: Linux reads num_pages right after setting DRIVER_OK.
func (d *Device) SetTarget(bytes uint64) error {
	if pages := bytes >> PFNShift; pages > math.MaxUint32 {
		return fmt.Errorf("%w: %d pages do not fit num_pages (32 bits)", accounting.ErrTarget, pages)
	}
	if err := d.ledger.SetTarget(bytes); err != nil {
		return err
	}
	d.mu.Lock()
	act := d.act
	d.mu.Unlock()
	if act != nil {
		act.ConfigChanged()
	}
	return nil
}

// Activate implements virtio.Device: a worker per queue the driver
// enabled, with roles numbered as Linux numbers them (spec.go).
func (d *Device) Activate(a virtio.Activation) error {
	qs := a.Queues
	var stats, reporting *virtio.Queue
	next := queueDeflate + 1
	if a.HasFeature(FeatureStatsVQ) {
		stats = qs[next]
		next++
	}
	if a.HasFeature(FeatureReporting) {
		reporting = qs[next]
	}
	mem := a.Mem
	var sources []virtio.Source
	for _, inflate := range []bool{true, false} {
		q := qs[queueInflate]
		if !inflate {
			q = qs[queueDeflate]
		}
		if !q.Ready() {
			continue
		}
		var c virtio.Chain
		buf := make([]byte, pfnChunk)
		pfns := make([]uint32, 0, pfnChunk/4)
		sources = append(sources, virtio.QueueSource(q, func(q *virtio.Queue) {
			_ = q.Drain(&c, func(c *virtio.Chain) (uint32, error) {
				d.pages(mem, c, inflate, buf, pfns)
				return 0, nil
			})
		}))
	}
	if reporting != nil && reporting.Ready() {
		var c virtio.Chain
		sources = append(sources, virtio.QueueSource(reporting, func(q *virtio.Queue) {
			_ = q.Drain(&c, func(c *virtio.Chain) (uint32, error) {
				d.reportFree(mem, c)
				return 0, nil
			})
		}))
	} else {
		reporting = nil
	}
	if stats != nil && stats.Ready() {
		var c virtio.Chain
		buf := make([]byte, MaxStatsBytes)
		sources = append(sources, virtio.QueueSource(stats, func(q *virtio.Queue) { d.serveStats(mem, q, &c, buf) }))
	} else {
		stats = nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.act, d.features, d.stats, d.report = &a, a.Features, stats, reporting != nil
	d.workers.Start(d.log, sources...)
	d.log.Info("virtio-balloon: driver ready", "features", fmt.Sprintf("%#x", a.Features),
		"stats", stats != nil, "reporting", reporting != nil, "num_pages", d.numPages())
	return nil
}

// Reset implements virtio.Device: the workers stop, the statistics buffer
// and actual are forgotten, and so are the held pages, as the guest's
// driver has forgotten them (their memory stays with the host until the
// guest touches it). After Shutdown the held pages are kept: that reset is
// the machine going away, not the guest's doing.
func (d *Device) Reset() {
	// Outside d.mu: the workers take it, and Stop waits for them.
	d.workers.Stop()
	d.mu.Lock()
	d.act, d.features, d.stats, d.report, d.held, d.actual = nil, 0, nil, false, false, 0
	close(d.statsWake)
	d.statsWake = make(chan struct{})
	closing := d.closing
	d.mu.Unlock()
	if closing {
		return
	}
	if st := d.ledger.Stats(); st.HeldBytes != 0 {
		d.m.resetsHolding.Add(1)
		d.log.Info("virtio-balloon: device reset while the balloon held pages; they are forgotten, as the guest forgot them",
			"held_bytes", st.HeldBytes)
	}
	d.ledger.Reset()
}

// Shutdown tells the device its machine is going away: the transport's
// closing reset keeps the ledger as it is, so the VM's last balloon stats
// show what the guest held at the end.
func (d *Device) Shutdown() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closing = true
}

// Close implements virtio.Device.
func (d *Device) Close() error {
	d.Reset()
	return nil
}

// State returns the device's side of the balloon.
func (d *Device) State() State {
	d.mu.Lock()
	s := State{Active: d.act != nil, Features: d.features, Actual: d.actual, StatsQueue: d.stats != nil,
		ReportingQueue: d.report}
	if d.guest.Updates != 0 {
		g := d.guest
		s.GuestStats = &g
	}
	d.mu.Unlock()
	s.NumPages = d.numPages()
	s.Metrics = d.Metrics()
	return s
}

// pages serves one inflate or deflate buffer: an array of PFNs, each handed
// to the ledger, which refuses (and counts) pages that are not RAM, held
// twice or not held. Buffers have no status: the driver learns nothing,
// as with QEMU, and the used length is 0.
func (d *Device) pages(mem *memory.Guest, c *virtio.Chain, inflate bool, buf []byte, pfns []uint32) {
	cmd := cmdInflate
	if !inflate {
		cmd = cmdDeflate
	}
	d.ledger.CountCommand(cmd)
	n := c.ReadLen
	if n%4 != 0 || n > MaxPFNBytes || c.WriteLen != 0 {
		d.malformed(c, "a PFN array must be a device-readable multiple of 4 bytes, at most MaxPFNBytes")
		n = min(n, MaxPFNBytes) &^ 3
	}
	r := c.NewReader(mem)
	for n > 0 {
		chunk := min(n, uint32(len(buf)))
		if _, err := io.ReadFull(r, buf[:chunk]); err != nil {
			// Queue.Pop checked every buffer is RAM, and RAM does not
			// shrink: a device model bug, not a guest's doing.
			d.warn.Error("virtio-balloon: reading a PFN array", "err", err)
			return
		}
		n -= chunk
		pfns, _ = AppendPFNs(pfns[:0], buf[:chunk])
		for _, pfn := range pfns {
			gpa := uint64(pfn) << PFNShift
			var err error
			if inflate {
				err = d.ledger.Inflate(gpa, accounting.Page4K)
			} else {
				err = d.ledger.Deflate(gpa, accounting.Page4K)
			}
			switch {
			case err != nil:
				d.m.refused.Add(1)
			case inflate:
				d.m.inflated.Add(1)
			default:
				d.m.deflated.Add(1)
			}
		}
	}
}

// reportFree serves one free page report: every device-writable buffer is
// a free range (Linux: virtqueue_add_inbuf of the page_reporting
// scatterlist, 2 MiB or larger blocks), given back to the host at once.
// The guest keeps the pages: they are not ballooned, only counted as
// reported. Misaligned ranges are skipped, as QEMU's
// virtio_balloon_handle_report skips them.
func (d *Device) reportFree(mem *memory.Guest, c *virtio.Chain) {
	d.ledger.CountCommand(cmdReport)
	if c.ReadLen != 0 {
		d.malformed(c, "free page reports are device-writable buffers")
	}
	for _, b := range c.Writable() {
		if (b.Addr|uint64(b.Len))%uint64(accounting.Page4K) != 0 {
			d.m.reportRefused.Add(1)
			d.ledger.CountError(accounting.KindMisaligned)
			continue
		}
		if err := mem.Discard(b.Addr, uint64(b.Len)); err != nil {
			d.m.reportRefused.Add(1)
			d.ledger.CountError(accounting.KindDiscard)
			d.warn.Warn("virtio-balloon: cannot give a reported free range back to the host", "err", err)
			continue
		}
		d.m.reportedRanges.Add(1)
		d.m.reportedBytes.Add(uint64(b.Len))
	}
}

// serveStats takes the driver's statistics buffers: each is read, kept
// (not returned: the host returns it when it wants fresh statistics) and
// wakes RequestStats. Linux has only one outstanding; should a driver
// send another, the older one goes back, so buffers are never lost.
func (d *Device) serveStats(mem *memory.Guest, q *virtio.Queue, c *virtio.Chain, buf []byte) {
	for {
		for {
			ok, err := q.Pop(c)
			if err != nil || !ok {
				break // a malformed chain set DEVICE_NEEDS_RESET
			}
			d.ledger.CountCommand(cmdStats)
			n := min(c.ReadLen, uint32(len(buf)))
			if _, err := io.ReadFull(c.NewReader(mem), buf[:n]); err != nil {
				d.warn.Error("virtio-balloon: reading statistics", "err", err)
				n = 0
			}
			values, p := ParseStats(buf[:n])
			if c.ReadLen > uint32(len(buf)) || p.Trailing != 0 || p.Dropped != 0 || c.WriteLen != 0 {
				d.malformed(c, "a statistics buffer must be device-readable 10-byte entries")
			}
			d.m.statsUpdates.Add(1)
			d.mu.Lock()
			if d.held {
				if err := q.Push(d.heldHead, 0); err != nil {
					d.warn.Error("virtio-balloon: returning the older statistics buffer", "err", err)
				}
			}
			d.held, d.heldHead = true, c.Head
			d.guest = GuestStats{Values: values, Updated: time.Now(), Updates: d.guest.Updates + 1}
			close(d.statsWake)
			d.statsWake = make(chan struct{})
			d.mu.Unlock()
		}
		q.Notify()
		if !q.EnableNotify() {
			return
		}
	}
}

// RequestStats asks the guest for fresh memory statistics: the device
// returns the buffer it holds (a used-buffer interrupt on the statistics
// queue, which makes Linux's driver refill it) and waits, until ctx ends,
// for the driver's next buffer. Without an answer it returns the last
// statistics (Fresh false) with ctx's error; without a statistics queue,
// the last ones (if any) with ErrNoStats.
func (d *Device) RequestStats(ctx context.Context) (GuestStats, error) {
	d.mu.Lock()
	q, wake, last := d.stats, d.statsWake, d.guest
	if q == nil {
		d.mu.Unlock()
		return last, ErrNoStats
	}
	d.m.statsRequests.Add(1)
	if d.held {
		d.held = false
		if err := q.Push(d.heldHead, 0); err != nil {
			d.mu.Unlock()
			return last, fmt.Errorf("virtio-balloon: returning the statistics buffer: %w", err)
		}
		q.Notify()
	}
	// Else a request is in flight already (or the driver has not primed
	// the queue yet): its answer is this one's too.
	d.mu.Unlock()
	select {
	case <-wake:
	case <-ctx.Done():
		d.m.statsTimeouts.Add(1)
		return last, fmt.Errorf("virtio-balloon: the guest did not send statistics: %w", ctx.Err())
	}
	d.mu.Lock()
	g, active := d.guest, d.stats != nil
	d.mu.Unlock()
	if g.Updates == last.Updates || !active {
		return g, ErrNoStats // woken by a reset
	}
	g.Fresh = true
	return g, nil
}

// malformed counts a buffer whose payload breaks the queue's format; the
// device uses what it can of it.
func (d *Device) malformed(c *virtio.Chain, what string) {
	d.m.malformed.Add(1)
	d.ledger.CountError(accounting.KindBadBatch)
	d.warn.Warn("virtio-balloon: malformed buffer", "problem", what, "readable", c.ReadLen, "writable", c.WriteLen)
}

func le32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
