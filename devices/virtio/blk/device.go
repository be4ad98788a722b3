// Package blk is virtio-blk (virtio device type 2, spec §5.2) over a raw
// image file: one request queue; IN, OUT, FLUSH and GET_ID requests; the
// capacity in 512-byte sectors, SEG_MAX and BLK_SIZE in the configuration;
// VIRTIO_BLK_F_RO for read-only disks, VIRTIO_BLK_F_FLUSH for a
// write-back cache whose flush is fdatasync.
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/memory"
)

// Request types and status values (struct virtio_blk_req, spec §5.2.6).
const (
	TypeIn    = 0
	TypeOut   = 1
	TypeFlush = 4
	TypeGetID = 8

	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2
)

// Feature bits (spec §5.2.3).
const (
	FeatureSizeMax = 1 << 1
	FeatureSegMax  = 1 << 2
	FeatureRO      = 1 << 5
	FeatureBlkSize = 1 << 6
	FeatureFlush   = 1 << 9
)

const (
	// SectorSize is the unit of capacity and of request offsets, whatever
	// the block size.
	SectorSize = 512
	// IDBytes is the length of the GET_ID answer (VIRTIO_BLK_ID_BYTES).
	IDBytes = 20
	// QueueSize is the request queue's maximum size (QEMU's default).
	QueueSize = 256
	// SegMax is the most data segments per request: a request is a header,
	// data segments and a status byte, in at most QueueSize descriptors
	// (Linux uses indirect tables up to this many too).
	SegMax = QueueSize - 2
	// headerSize is struct virtio_blk_outhdr: type, reserved, sector.
	headerSize = 16
)

// Offsets in struct virtio_blk_config.
const (
	cfgCapacity = 0x00
	cfgSizeMax  = 0x08
	cfgSegMax   = 0x0C
	cfgBlkSize  = 0x14
	// configSize runs to num_queues (0x22, 2 bytes): the fields Linux reads
	// for the features offered here.
	configSize = 0x24
)

// ErrBadRequest: a request so malformed it cannot even be answered (no
// header, no status byte); the device needs a reset.
var ErrBadRequest = errors.New("malformed virtio-blk request")

// Config describes a disk.
type Config struct {
	// Path is a raw image file or a block device.
	Path string
	// ReadOnly opens it read-only and offers VIRTIO_BLK_F_RO.
	ReadOnly bool
	// Serial is the GET_ID answer: at most IDBytes bytes.
	Serial string
	Log    *slog.Logger
}

// backend is what requests need of the image (an *os.File; tests inject
// failures).
type backend interface {
	io.ReaderAt
	io.WriterAt
	// Datasync makes written data durable (fdatasync).
	Datasync() error
	Close() error
}

type fileBackend struct{ *os.File }

func (f fileBackend) Datasync() error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// Device is a virtio-blk disk.
type Device struct {
	path     string
	readOnly bool
	serial   [IDBytes]byte
	capacity uint64 // sectors
	disk     backend
	log      *slog.Logger
	warn     *virtio.RateLimitedLog
	m        metrics

	mu        sync.Mutex
	workers   virtio.WorkerSlot
	writeBack bool // FLUSH negotiated: writes may stay in the page cache until a flush
	closed    bool
}

// New opens the image and locks it (shared for read-only, exclusive
// otherwise), so two VMs cannot write one disk.
func New(c Config) (*Device, error) {
	if len(c.Serial) > IDBytes {
		return nil, fmt.Errorf("virtio-blk %s: serial %q is longer than %d bytes", c.Path, c.Serial, IDBytes)
	}
	flag, lock := os.O_RDWR, unix.LOCK_EX
	if c.ReadOnly {
		flag, lock = os.O_RDONLY, unix.LOCK_SH
	}
	f, err := os.OpenFile(c.Path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("virtio-blk: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	if err := flock(f, lock); err != nil {
		return nil, fmt.Errorf("virtio-blk %s: locking the image (is another VM using it?): %w", c.Path, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("virtio-blk %s: size: %w", c.Path, err)
	}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	d := newDevice(c, fileBackend{f}, uint64(size), log)
	if size%SectorSize != 0 {
		log.Warn("virtio-blk: image size is not a multiple of 512 bytes; the tail is not visible to the guest",
			"path", c.Path, "size", size)
	}
	ok = true
	return d, nil
}

func newDevice(c Config, disk backend, size uint64, log *slog.Logger) *Device {
	d := &Device{path: c.Path, readOnly: c.ReadOnly, capacity: size / SectorSize, disk: disk, log: log,
		warn: virtio.NewRateLimitedLog(log, virtio.DefaultLogInterval)}
	copy(d.serial[:], c.Serial)
	return d
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = unix.Flock(int(fd), how|unix.LOCK_NB) }); err != nil {
		return err
	}
	return ferr
}

// Capacity is the disk size in sectors.
func (d *Device) Capacity() uint64 { return d.capacity }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBlock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	f := uint64(virtio.RingFeatures | FeatureSegMax | FeatureBlkSize | FeatureFlush)
	if d.readOnly {
		f |= FeatureRO
	}
	return f
}

// QueueSizes implements virtio.Device: one request queue.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize} }

// ConfigSize implements virtio.Device.
func (d *Device) ConfigSize() int { return configSize }

// ReadConfig implements virtio.Device. The configuration never changes.
func (d *Device) ReadConfig(off int, data []byte) {
	var c [configSize]byte
	binary.LittleEndian.PutUint64(c[cfgCapacity:], d.capacity)
	binary.LittleEndian.PutUint32(c[cfgSegMax:], SegMax)
	binary.LittleEndian.PutUint32(c[cfgBlkSize:], SectorSize)
	copy(data, c[off:])
}

// WriteConfig implements virtio.Device: nothing is writable
// (VIRTIO_BLK_F_CONFIG_WCE is not offered).
func (d *Device) WriteConfig(int, []byte) {}

// Activate implements virtio.Device: one worker on the request queue.
func (d *Device) Activate(a virtio.Activation) error {
	q := a.Queues[0]
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("virtio-blk: device closed")
	}
	d.writeBack = a.HasFeature(FeatureFlush)
	if !q.Ready() {
		return nil // nothing to serve; the driver may only read the configuration
	}
	var c virtio.Chain
	var iov [][]byte
	mem := a.Mem
	d.workers.Start(d.log, virtio.QueueSource(q, func(q *virtio.Queue) {
		_ = q.Drain(&c, func(c *virtio.Chain) (uint32, error) {
			n, err := d.Handle(mem, c, &iov)
			return n, err
		})
	}))
	return nil
}

// Reset implements virtio.Device.
func (d *Device) Reset() {
	// Outside d.mu: the workers take it, and Stop waits for them.
	d.workers.Stop()
}

// Close implements virtio.Device: written data is made durable before the
// image is closed, so a clean poweroff loses nothing even if the guest
// never flushed.
func (d *Device) Close() error {
	d.Reset()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	if !d.readOnly {
		if err := d.disk.Datasync(); err != nil {
			errs = append(errs, fmt.Errorf("virtio-blk %s: fdatasync: %w", d.path, err))
		}
	}
	if err := d.disk.Close(); err != nil {
		errs = append(errs, fmt.Errorf("virtio-blk %s: close: %w", d.path, err))
	}
	return errors.Join(errs...)
}

// Handle serves one request chain and returns the number of bytes written
// into it (data and status). iov is scratch space. An error means the
// chain has no room for an answer: the device needs a reset.
func (d *Device) Handle(mem *memory.Guest, c *virtio.Chain, iov *[][]byte) (uint32, error) {
	if c.ReadLen < headerSize {
		d.m.badRequests.Add(1)
		return 0, fmt.Errorf("%w: %d readable bytes, no %d-byte header", ErrBadRequest, c.ReadLen, headerSize)
	}
	if c.WriteLen < 1 {
		d.m.badRequests.Add(1)
		return 0, fmt.Errorf("%w: no writable status byte", ErrBadRequest)
	}
	var hdr [headerSize]byte
	r := c.NewReader(mem)
	// A direct call, not io.ReadFull: through the interface the reader and
	// the header would escape, two allocations per request.
	if n, err := r.Read(hdr[:]); err != nil || n != headerSize {
		return 0, fmt.Errorf("%w: header: %d bytes, %v", ErrBadRequest, n, err)
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	w := c.NewWriter(mem)
	dataIn := c.WriteLen - 1 // writable bytes before the status byte
	var status byte
	switch typ {
	case TypeIn:
		status = d.read(mem, w, sector, dataIn, iov)
	case TypeOut:
		status = d.write(r, sector, iov)
	case TypeFlush:
		status = d.flush()
	case TypeGetID:
		d.m.getIDs.Add(1)
		_, _ = w.Write(d.serial[:min(IDBytes, dataIn)])
	default:
		d.m.unsupported.Add(1)
		status = StatusUnsupp
	}
	// The status is the chain's last writable byte, wherever the data
	// ended (a short read leaves the rest of the data untouched).
	desc := c.Writable()
	last := desc[len(desc)-1]
	if err := mem.Write(last.Addr+uint64(last.Len)-1, []byte{status}); err != nil {
		return 0, err // cannot happen: the chain was validated
	}
	return w.Written() + 1, nil
}

// inRange checks a request of n bytes at sector against the capacity.
func (d *Device) inRange(sector uint64, n uint32, what string) bool {
	if n%SectorSize != 0 {
		d.warn.Warn("virtio-blk: request length is not a multiple of 512", "op", what, "len", n)
		return false
	}
	if sector > d.capacity || uint64(n/SectorSize) > d.capacity-sector {
		d.warn.Warn("virtio-blk: request beyond the end of the disk", "op", what, "sector", sector,
			"sectors", n/SectorSize, "capacity", d.capacity)
		return false
	}
	return true
}

func (d *Device) read(mem *memory.Guest, w *virtio.ChainWriter, sector uint64, n uint32, iov *[][]byte) byte {
	d.m.reads.Add(1)
	if !d.inRange(sector, n, "read") {
		d.m.ioErrors.Add(1)
		return StatusIOErr
	}
	bufs, err := w.Slices(n, (*iov)[:0])
	*iov = bufs
	if err != nil {
		d.m.ioErrors.Add(1)
		return StatusIOErr
	}
	off := int64(sector * SectorSize)
	for _, b := range bufs {
		if _, err := d.disk.ReadAt(b, off); err != nil {
			d.m.ioErrors.Add(1)
			d.warn.Warn("virtio-blk: read failed", "path", d.path, "offset", off, "err", err)
			return StatusIOErr
		}
		off += int64(len(b))
	}
	d.m.readBytes.Add(uint64(n))
	return StatusOK
}

func (d *Device) write(r *virtio.ChainReader, sector uint64, iov *[][]byte) byte {
	d.m.writes.Add(1)
	n := r.Len()
	if d.readOnly {
		// A driver that saw VIRTIO_BLK_F_RO does not write; one that does
		// gets an I/O error, as from a write-protected disk.
		d.m.ioErrors.Add(1)
		d.warn.Warn("virtio-blk: write to a read-only disk refused", "path", d.path, "sector", sector)
		return StatusIOErr
	}
	if !d.inRange(sector, n, "write") {
		d.m.ioErrors.Add(1)
		return StatusIOErr
	}
	bufs, err := r.Slices(n, (*iov)[:0])
	*iov = bufs
	if err != nil {
		d.m.ioErrors.Add(1)
		return StatusIOErr
	}
	off := int64(sector * SectorSize)
	for _, b := range bufs {
		if _, err := d.disk.WriteAt(b, off); err != nil {
			d.m.ioErrors.Add(1)
			d.warn.Warn("virtio-blk: write failed", "path", d.path, "offset", off, "err", err)
			return StatusIOErr
		}
		off += int64(len(b))
	}
	d.m.writeBytes.Add(uint64(n))
	d.mu.Lock()
	writeBack := d.writeBack
	d.mu.Unlock()
	if !writeBack {
		// Without VIRTIO_BLK_F_FLUSH the driver cannot ask for durability,
		// so the device is write-through (spec §5.2.6.3).
		if err := d.disk.Datasync(); err != nil {
			d.m.ioErrors.Add(1)
			d.warn.Warn("virtio-blk: fdatasync failed", "path", d.path, "err", err)
			return StatusIOErr
		}
	}
	return StatusOK
}

func (d *Device) flush() byte {
	d.m.flushes.Add(1)
	if d.readOnly {
		return StatusOK
	}
	if err := d.disk.Datasync(); err != nil {
		d.m.ioErrors.Add(1)
		d.warn.Warn("virtio-blk: flush failed", "path", d.path, "err", err)
		return StatusIOErr
	}
	return StatusOK
}
