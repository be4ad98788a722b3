package balloon

import (
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	accounting "github.com/kvmm/kvmm/balloon"
	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
	"github.com/kvmm/kvmm/memory"
)

const waitTime = 5 * time.Second

var quiet = slog.New(slog.DiscardHandler)

// guestRAM forwards the ledger's memory to the harness's guest RAM, which
// the harness maps only after the device exists (the ledger must come
// first: New takes it).
type guestRAM struct{ g *memory.Guest }

func (m *guestRAM) Contains(gpa, n uint64) bool      { return m.g.Contains(gpa, n) }
func (m *guestRAM) Read(gpa uint64, b []byte) error  { return m.g.Read(gpa, b) }
func (m *guestRAM) Write(gpa uint64, b []byte) error { return m.g.Write(gpa, b) }
func (m *guestRAM) Discard(gpa, n uint64) error      { return m.g.Discard(gpa, n) }
func (m *guestRAM) Size() uint64                     { return m.g.Size() }

// rig is a virtio-balloon behind a transport on a PCI bus, driven from Go
// the way Linux's virtio_balloon drives it.
type rig struct {
	*virtiotest.Harness
	dev    *Device
	ledger *accounting.Ledger
	ram    *guestRAM
}

// newRig builds the device and its harness without initialising a driver.
func newRig(t testing.TB, memSize uint64) *rig {
	t.Helper()
	ram := &guestRAM{}
	ledger := accounting.NewLedger(ram, Commands, quiet)
	dev, err := New(Config{Ledger: ledger, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h := virtiotest.New(t, dev, virtiotest.Options{MemSize: memSize, IOEventFDs: true})
	ram.g = h.Mem
	return &rig{Harness: h, dev: dev, ledger: ledger, ram: ram}
}

// allFeatures is what Linux 6.1 accepts of what the device offers (with
// free page reporting on: no page poisoning in the guest).
const allFeatures = virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc |
	FeatureStatsVQ | FeatureDeflateOnOOM | FeatureReporting

// driver is the driver side after initialisation: one DriverQueue per
// queue Linux creates for the features, by role.
type driver struct {
	inflate, deflate, stats, reporting *virtiotest.DriverQueue
	statsBuf                           uint64 // the statistics buffer
}

// initDriver does init_vqs and virtballoon_probe: negotiate, set up the
// queues Linux creates (numbered consecutively), prime the statistics
// queue with one buffer of stats before DRIVER_OK, as init_vqs does.
func (r *rig) initDriver(t testing.TB, features uint64, stats map[uint16]uint64) *driver {
	t.Helper()
	n := 2
	if features&FeatureStatsVQ != 0 {
		n++
	}
	if features&FeatureReporting != 0 {
		n++
	}
	if !r.Negotiate(features) {
		t.Fatalf("FEATURES_OK refused for %#x", features)
	}
	r.EnableMSIX()
	r.SetCommon(virtio.CommonConfigMSIXVector, 2, uint64(maxQueues))
	var qs []*virtiotest.DriverQueue
	for i := range n {
		qs = append(qs, r.SetupQueue(i, 0, uint16(i), features&virtio.FeatureEventIdx != 0))
	}
	d := &driver{inflate: qs[0], deflate: qs[1]}
	next := 2
	if features&FeatureStatsVQ != 0 {
		d.stats = qs[next]
		next++
		d.statsBuf = r.Alloc(StatEntrySize*numKnownStats, 8)
		r.writeStats(t, d.statsBuf, stats)
		d.stats.AddAndPublish(virtiotest.Buf{Addr: d.statsBuf, Len: uint32(StatEntrySize * len(stats))})
		r.Notify(d.stats.Index)
	}
	if features&FeatureReporting != 0 {
		d.reporting = qs[next]
	}
	r.DriverOK()
	if s := r.Status(); s&virtio.StatusDriverOK == 0 || s&virtio.StatusNeedsReset != 0 {
		t.Fatalf("status %#x after DRIVER_OK", s)
	}
	return d
}

// writeStats lays out stats entries in tag order at addr.
func (r *rig) writeStats(t testing.TB, addr uint64, stats map[uint16]uint64) {
	t.Helper()
	var b []byte
	for tag := range uint16(1024) {
		if v, ok := stats[tag]; ok {
			b = binary.LittleEndian.AppendUint16(b, tag)
			b = binary.LittleEndian.AppendUint64(b, v)
		}
	}
	if err := r.Mem.Write(addr, b); err != nil {
		t.Fatal(err)
	}
}

// pfnArray writes pfns at a fresh buffer and returns it.
func (r *rig) pfnArray(t testing.TB, pfns []uint32) virtiotest.Buf {
	t.Helper()
	b := make([]byte, 0, 4*len(pfns))
	for _, p := range pfns {
		b = binary.LittleEndian.AppendUint32(b, p)
	}
	addr := r.Alloc(uint64(max(len(b), 4)), 4)
	if err := r.Mem.Write(addr, b); err != nil {
		t.Fatal(err)
	}
	return virtiotest.Buf{Addr: addr, Len: uint32(len(b))}
}

// tell is tell_host: one buffer, kick, wait for the host to use it.
func (r *rig) tell(t testing.TB, q *virtiotest.DriverQueue, bufs ...virtiotest.Buf) {
	t.Helper()
	n, ok := q.Submit(waitTime, bufs...)
	if !ok {
		t.Fatalf("queue %d: the device did not use the buffer (status %#x)", q.Index, r.Status())
	}
	if n != 0 {
		t.Errorf("queue %d: used length %d, want 0", q.Index, n)
	}
}

// touch writes a word into every page of [gpa, gpa+n) so that the host
// backs them.
func (r *rig) touch(t testing.TB, gpa, n uint64) {
	t.Helper()
	for a := gpa; a < gpa+n; a += 4096 {
		if err := r.Mem.WriteU64(a, a|1); err != nil {
			t.Fatal(err)
		}
	}
}

func (r *rig) resident(t testing.TB, gpa, n uint64) uint64 {
	t.Helper()
	b, err := r.Mem.Resident(gpa, n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pfnRange is n consecutive PFNs from gpa.
func pfnRange(gpa uint64, n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(gpa>>PFNShift) + uint32(i)
	}
	return out
}

// waitPrimed waits until the device has taken the statistics buffer
// init_vqs primed (its worker reads it once the driver is ready).
func (r *rig) waitPrimed(t testing.TB) {
	t.Helper()
	for deadline := time.Now().Add(waitTime); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if r.dev.State().GuestStats != nil {
			return
		}
	}
	t.Fatal("the device did not take the primed statistics buffer")
}
