package blk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

const waitTime = 5 * time.Second

var quiet = slog.New(slog.DiscardHandler)

// tmpfsDir is a directory on tmpfs when there is one (benchmarks measure
// the device, not the disk), else the test's temporary directory.
func tmpfsDir(t testing.TB) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "kvmm-blk-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// sectorPattern is what sector s of a test image holds.
func sectorPattern(s uint64) []byte {
	b := make([]byte, SectorSize)
	for i := range b {
		b[i] = byte(uint64(i)*7 + s*13)
	}
	return b
}

func newImage(t testing.TB, sectors uint64) string {
	t.Helper()
	path := filepath.Join(tmpfsDir(t), "disk.img")
	var img []byte
	for s := range sectors {
		img = append(img, sectorPattern(s)...)
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// disk is a device on a harness with its request queue set up.
type disk struct {
	t   testing.TB
	h   *virtiotest.Harness
	q   *virtiotest.DriverQueue
	dev *Device
	hdr uint64 // scratch: header, status, data
	st  uint64
	buf uint64
}

func features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureIndirectDesc | virtio.FeatureEventIdx | FeatureFlush | FeatureBlkSize | FeatureSegMax
}

func newDisk(t testing.TB, dev *Device, feat uint64) *disk {
	t.Helper()
	h := virtiotest.New(t, dev, virtiotest.Options{IOEventFDs: true, MemSize: 32 << 20})
	q := h.Init(feat, QueueSize)[0]
	return &disk{t: t, h: h, q: q, dev: dev, hdr: h.Alloc(16, 16), st: h.Alloc(1, 1), buf: h.Alloc(1<<20, 4096)}
}

func openDisk(t testing.TB, c Config) *Device {
	t.Helper()
	c.Log = quiet
	d, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *disk) header(typ uint32, sector uint64) {
	var b [16]byte
	binary.LittleEndian.PutUint32(b[0:], typ)
	binary.LittleEndian.PutUint64(b[8:], sector)
	_ = d.h.Mem.Write(d.hdr, b[:])
	_ = d.h.Mem.Write(d.st, []byte{0xEE})
}

// do submits a request with n data bytes at d.buf (device-writable for IN
// and GET_ID) and returns the status byte and the used length.
func (d *disk) do(typ uint32, sector uint64, n uint32) (byte, uint32) {
	d.t.Helper()
	d.header(typ, sector)
	bufs := []virtiotest.Buf{{Addr: d.hdr, Len: 16}}
	if n > 0 {
		bufs = append(bufs, virtiotest.Buf{Addr: d.buf, Len: n, Write: typ != TypeOut})
	}
	bufs = append(bufs, virtiotest.Buf{Addr: d.st, Len: 1, Write: true})
	used, ok := d.q.Submit(waitTime, bufs...)
	if !ok {
		d.t.Fatalf("request type %d: no completion (status %#x)", typ, d.h.Status())
	}
	st, _ := d.h.Mem.ReadU16(d.st)
	return byte(st), used
}

func (d *disk) data(n int) []byte {
	b := make([]byte, n)
	_ = d.h.Mem.Read(d.buf, b)
	return b
}

func TestConfigAndFeatures(t *testing.T) {
	for _, ro := range []bool{false, true} {
		dev := openDisk(t, Config{Path: newImage(t, 100), ReadOnly: ro})
		h := virtiotest.New(t, dev, virtiotest.Options{})
		f := h.DeviceFeatures()
		if f&FeatureRO != 0 != ro || f&FeatureFlush == 0 || f&virtio.FeatureVersion1 == 0 ||
			f&virtio.FeatureIndirectDesc == 0 || f&virtio.FeatureEventIdx == 0 {
			t.Errorf("read-only %v: features %#x", ro, f)
		}
		cfg := h.DeviceConfig(0, configSize)
		if c := binary.LittleEndian.Uint64(cfg[cfgCapacity:]); c != 100 {
			t.Errorf("capacity %d sectors, want 100", c)
		}
		if s := binary.LittleEndian.Uint32(cfg[cfgSegMax:]); s != SegMax {
			t.Errorf("seg_max %d", s)
		}
		if b := binary.LittleEndian.Uint32(cfg[cfgBlkSize:]); b != 512 {
			t.Errorf("blk_size %d", b)
		}
		if h.ConfigRead16(0x02) != 0x1042 || h.ConfigRead16(0x0A) != 0x0100 {
			t.Errorf("PCI ID %#x class %#x", h.ConfigRead16(0x02), h.ConfigRead16(0x0A))
		}
	}
}

func TestReadWriteFlush(t *testing.T) {
	path := newImage(t, 64)
	d := newDisk(t, openDisk(t, Config{Path: path}), features())
	// Read sectors 3-4.
	st, used := d.do(TypeIn, 3, 1024)
	if st != StatusOK || used != 1025 {
		t.Fatalf("read: status %d used %d", st, used)
	}
	if got := d.data(1024); !bytes.Equal(got, append(sectorPattern(3), sectorPattern(4)...)) {
		t.Fatal("read returned the wrong data")
	}
	// Write sector 10, flush, and find it in the host file.
	want := bytes.Repeat([]byte("kvmm"), 128)
	_ = d.h.Mem.Write(d.buf, want)
	if st, used := d.do(TypeOut, 10, 512); st != StatusOK || used != 1 {
		t.Fatalf("write: status %d used %d", st, used)
	}
	if st, _ := d.do(TypeFlush, 0, 0); st != StatusOK {
		t.Fatalf("flush: status %d", st)
	}
	img, _ := os.ReadFile(path)
	if !bytes.Equal(img[10*512:11*512], want) {
		t.Fatal("the host file lacks the written sector")
	}
	if !bytes.Equal(img[11*512:12*512], sectorPattern(11)) {
		t.Fatal("the write spilled into the next sector")
	}
	// Read it back through the device.
	_ = d.h.Mem.Write(d.buf, make([]byte, 512))
	if st, _ := d.do(TypeIn, 10, 512); st != StatusOK || !bytes.Equal(d.data(512), want) {
		t.Fatal("read-back differs")
	}
	m := d.dev.Metrics()
	if m.Reads != 2 || m.Writes != 1 || m.Flushes != 1 || m.ReadBytes != 1536 || m.WriteBytes != 512 || m.IOErrors != 0 {
		t.Errorf("metrics %+v", m)
	}
}

// TestSegmentedAndIndirect: data spread over several descriptors, with
// the header and status sharing... nothing, and the same through an
// indirect table (how Linux sends most requests).
func TestSegmentedAndIndirect(t *testing.T) {
	path := newImage(t, 64)
	d := newDisk(t, openDisk(t, Config{Path: path}), features())
	a, b, c := d.h.Alloc(512, 8), d.h.Alloc(1024, 8), d.h.Alloc(512, 8)
	for _, indirect := range []bool{false, true} {
		d.header(TypeIn, 20)
		bufs := []virtiotest.Buf{{Addr: d.hdr, Len: 16}, {Addr: a, Len: 512, Write: true}, {Addr: b, Len: 1024, Write: true},
			{Addr: c, Len: 512, Write: true}, {Addr: d.st, Len: 1, Write: true}}
		var head uint16
		if indirect {
			head = d.q.AddIndirect(bufs...)
		} else {
			head = d.q.Add(bufs...)
		}
		d.q.Publish(head)
		d.h.Notify(0)
		if _, used, ok := d.q.WaitUsed(waitTime); !ok || used != 2049 {
			t.Fatalf("indirect %v: used %d ok %v", indirect, used, ok)
		}
		got := make([]byte, 2048)
		_ = d.h.Mem.Read(a, got[:512])
		_ = d.h.Mem.Read(b, got[512:1536])
		_ = d.h.Mem.Read(c, got[1536:])
		var want []byte
		for s := uint64(20); s < 24; s++ {
			want = append(want, sectorPattern(s)...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("indirect %v: data differs", indirect)
		}
	}
	// Status byte in the same descriptor as the data.
	d.header(TypeIn, 1)
	if _, ok := d.q.Submit(waitTime, virtiotest.Buf{Addr: d.hdr, Len: 16}, virtiotest.Buf{Addr: d.buf, Len: 513, Write: true}); !ok {
		t.Fatal("no completion")
	}
	if got := d.data(513); !bytes.Equal(got[:512], sectorPattern(1)) || got[512] != StatusOK {
		t.Fatal("data+status in one buffer")
	}
}

func TestGetID(t *testing.T) {
	path := newImage(t, 8)
	for _, tc := range []struct {
		serial string
		n      uint32
		want   string
	}{
		{"kvmm-disk0", 20, "kvmm-disk0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"},
		{"exactly-twenty-bytes", 20, "exactly-twenty-bytes"},
		{"short-buffer", 5, "short"},
		{"", 20, string(make([]byte, 20))},
	} {
		d := newDisk(t, openDisk(t, Config{Path: path, Serial: tc.serial, ReadOnly: true}), features())
		_ = d.h.Mem.Write(d.buf, bytes.Repeat([]byte{0xAA}, 32))
		st, used := d.do(TypeGetID, 0, tc.n)
		if st != StatusOK || used != uint32(len(tc.want))+1 {
			t.Errorf("%q: status %d used %d", tc.serial, st, used)
		}
		if got := d.data(len(tc.want)); string(got) != tc.want {
			t.Errorf("%q: id %q", tc.serial, got)
		}
	}
	if _, err := New(Config{Path: path, Serial: "this serial is longer than twenty"}); err == nil {
		t.Error("21-byte serial accepted")
	}
}

func TestReadOnly(t *testing.T) {
	path := newImage(t, 16)
	d := newDisk(t, openDisk(t, Config{Path: path, ReadOnly: true}), features()|FeatureRO)
	_ = d.h.Mem.Write(d.buf, bytes.Repeat([]byte{0x55}, 512))
	if st, _ := d.do(TypeOut, 2, 512); st != StatusIOErr {
		t.Fatalf("write to a read-only disk: status %d, want IOERR", st)
	}
	if st, _ := d.do(TypeFlush, 0, 0); st != StatusOK {
		t.Fatalf("flush of a read-only disk: %d", st)
	}
	if st, _ := d.do(TypeIn, 2, 512); st != StatusOK || !bytes.Equal(d.data(512), sectorPattern(2)) {
		t.Fatal("read of a read-only disk")
	}
	img, _ := os.ReadFile(path)
	if !bytes.Equal(img[1024:1536], sectorPattern(2)) {
		t.Fatal("read-only image modified")
	}
	// A read-only open takes a shared lock: two read-only users are fine,
	// a writer is not.
	d2, err := New(Config{Path: path, ReadOnly: true, Log: quiet})
	if err != nil {
		t.Fatalf("second read-only open: %v", err)
	}
	d2.Close()
	if d3, err := New(Config{Path: path, Log: quiet}); err == nil {
		d3.Close()
		t.Error("read-write open of an image in read-only use")
	}
}

func TestExclusiveLock(t *testing.T) {
	path := newImage(t, 4)
	d := openDisk(t, Config{Path: path})
	if d2, err := New(Config{Path: path, Log: quiet}); err == nil {
		d2.Close()
		t.Fatal("two writers on one image")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := openDisk(t, Config{Path: path})
	d2.Close()
}

func TestOutOfRangeAndUnsupported(t *testing.T) {
	path := newImage(t, 16)
	d := newDisk(t, openDisk(t, Config{Path: path}), features())
	for _, tc := range []struct {
		name   string
		typ    uint32
		sector uint64
		n      uint32
		want   byte
	}{
		{"read past the end", TypeIn, 16, 512, StatusIOErr},
		{"read across the end", TypeIn, 15, 1024, StatusIOErr},
		{"write past the end", TypeOut, 17, 512, StatusIOErr},
		{"sector overflow", TypeIn, 1 << 63, 512, StatusIOErr},
		{"sector max", TypeOut, ^uint64(0), 512, StatusIOErr},
		{"length not a multiple of 512", TypeIn, 0, 100, StatusIOErr},
		{"write not a multiple of 512", TypeOut, 0, 513, StatusIOErr},
		{"last sector", TypeIn, 15, 512, StatusOK},
		{"zero-length read", TypeIn, 16, 0, StatusOK},
		{"discard", 11, 0, 16, StatusUnsupp},
		{"write zeroes", 13, 0, 16, StatusUnsupp},
		{"get lifetime", 10, 0, 16, StatusUnsupp},
	} {
		if st, _ := d.do(tc.typ, tc.sector, tc.n); st != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, st, tc.want)
		}
	}
	img, _ := os.ReadFile(path)
	if len(img) != 16*512 {
		t.Errorf("image grew to %d bytes", len(img))
	}
	if d.h.Status()&virtio.StatusNeedsReset != 0 {
		t.Error("request errors broke the device")
	}
}

// TestBadRequests: requests without a readable header or a writable
// status byte (wrong directions included) cannot be answered: the device
// needs a reset. A reset recovers.
func TestBadRequests(t *testing.T) {
	path := newImage(t, 16)
	for _, tc := range []struct {
		name string
		bufs func(d *disk) []virtiotest.Buf
	}{
		{"header too short", func(d *disk) []virtiotest.Buf {
			return []virtiotest.Buf{{Addr: d.hdr, Len: 8}, {Addr: d.st, Len: 1, Write: true}}
		}},
		{"header device-writable", func(d *disk) []virtiotest.Buf {
			return []virtiotest.Buf{{Addr: d.hdr, Len: 16, Write: true}, {Addr: d.st, Len: 1, Write: true}}
		}},
		{"status device-readable", func(d *disk) []virtiotest.Buf {
			return []virtiotest.Buf{{Addr: d.hdr, Len: 16}, {Addr: d.st, Len: 1}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDisk(t, openDisk(t, Config{Path: path}), features())
			d.header(TypeIn, 0)
			d.q.AddAndPublish(tc.bufs(d)...)
			d.h.Notify(0)
			for end := time.Now().Add(waitTime); d.h.Status()&virtio.StatusNeedsReset == 0 && time.Now().Before(end); {
				time.Sleep(time.Millisecond)
			}
			if s := d.h.Status(); s&virtio.StatusNeedsReset == 0 {
				t.Fatalf("status %#x", s)
			}
			if d.dev.Metrics().BadRequests != 1 {
				t.Errorf("metrics %+v", d.dev.Metrics())
			}
			d.q = d.h.Init(features(), QueueSize)[0]
			if st, _ := d.do(TypeIn, 0, 512); st != StatusOK {
				t.Fatal("no recovery after reset")
			}
		})
	}
}

// failingDisk is a backend whose I/O fails, and counts syncs.
type failingDisk struct {
	fail  atomic.Bool
	syncs atomic.Int32
	data  []byte
}

func (f *failingDisk) ReadAt(b []byte, off int64) (int, error) {
	if f.fail.Load() {
		return 0, errors.New("EIO")
	}
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	return copy(b, f.data[off:]), nil
}

func (f *failingDisk) WriteAt(b []byte, off int64) (int, error) {
	if f.fail.Load() {
		return 0, errors.New("EIO")
	}
	return copy(f.data[off:], b), nil
}

func (f *failingDisk) Datasync() error {
	f.syncs.Add(1)
	if f.fail.Load() {
		return errors.New("EIO")
	}
	return nil
}

func (f *failingDisk) Close() error { return nil }

func TestIOErrorsAndWriteThrough(t *testing.T) {
	back := &failingDisk{data: make([]byte, 8*512)}
	dev := newDevice(Config{Path: "fake"}, back, 8*512, quiet)
	// Without FLUSH negotiated every write is synced (write-through).
	d := newDisk(t, dev, features()&^FeatureFlush)
	for range 3 {
		if st, _ := d.do(TypeOut, 1, 512); st != StatusOK {
			t.Fatal("write")
		}
	}
	if n := back.syncs.Load(); n != 3 {
		t.Errorf("%d syncs for 3 write-through writes", n)
	}
	// With FLUSH, only flushes sync.
	d.q = d.h.Init(features(), QueueSize)[0]
	back.syncs.Store(0)
	d.do(TypeOut, 1, 512)
	d.do(TypeFlush, 0, 0)
	if n := back.syncs.Load(); n != 1 {
		t.Errorf("%d syncs for a write-back write and a flush", n)
	}
	back.fail.Store(true)
	for _, typ := range []uint32{TypeIn, TypeOut, TypeFlush} {
		n := uint32(512)
		if typ == TypeFlush {
			n = 0
		}
		if st, _ := d.do(typ, 0, n); st != StatusIOErr {
			t.Errorf("type %d on a failing disk: status %d", typ, st)
		}
	}
	back.fail.Store(false)
	back.syncs.Store(0)
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if back.syncs.Load() != 1 {
		t.Error("Close did not make the data durable")
	}
}

// TestDataReachesFileOnClose: a guest that writes and never flushes
// still finds its data in the image after the machine closes the device.
func TestDataReachesFileOnClose(t *testing.T) {
	path := newImage(t, 8)
	dev := openDisk(t, Config{Path: path})
	d := newDisk(t, dev, features())
	_ = d.h.Mem.Write(d.buf, bytes.Repeat([]byte{0x77}, 512))
	if st, _ := d.do(TypeOut, 7, 512); st != StatusOK {
		t.Fatal("write")
	}
	if err := d.h.Transport.Close(); err != nil {
		t.Fatal(err)
	}
	img, _ := os.ReadFile(path)
	if !bytes.Equal(img[7*512:], bytes.Repeat([]byte{0x77}, 512)) {
		t.Fatal("written data not in the image")
	}
	// Close is idempotent (the harness closes again at cleanup).
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestResetCyclesNoLeak(t *testing.T) {
	path := newImage(t, 8)
	d := newDisk(t, openDisk(t, Config{Path: path}), features())
	before := runtime.NumGoroutine()
	for range 30 {
		d.q = d.h.Init(features(), QueueSize)[0]
		if st, _ := d.do(TypeIn, 0, 512); st != StatusOK {
			t.Fatal("read")
		}
	}
	d.h.SetStatus(0)
	for end := time.Now().Add(2 * time.Second); runtime.NumGoroutine() >= before && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	// After the final reset the device's worker is gone too.
	if after := runtime.NumGoroutine(); after >= before {
		t.Errorf("goroutines %d with an active device, %d after 30 cycles and a reset", before, after)
	}
}

func truncate(path string, size int64) error { return os.Truncate(path, size) }
