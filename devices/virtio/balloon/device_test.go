package balloon

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"testing"
	"time"

	accounting "github.com/kvmm/kvmm/balloon"
	"github.com/kvmm/kvmm/devices/pci"
	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

// linuxStats is what Linux 6.1's update_balloon_stats sends, in its order
// (CONFIG_VM_EVENT_COUNTERS and CONFIG_HUGETLB_PAGE, as Debian builds it).
func linuxStats(free uint64, minflt uint64) map[uint16]uint64 {
	return map[uint16]uint64{
		StatSwapIn: 0, StatSwapOut: 0, StatMajorFaults: 3, StatMinorFaults: minflt,
		StatHugetlbAlloc: 0, StatHugetlbFail: 0,
		StatFreeMemory: free, StatTotalMemory: 16 << 20, StatAvailMemory: free + 1<<20, StatDiskCaches: 1 << 20,
	}
}

func TestIdentity(t *testing.T) {
	r := newRig(t, 16<<20)
	if id, class := r.ConfigRead16(pci.RegDeviceID), r.ConfigRead32(pci.RegRevision)>>8; id != 0x1045 || class != 0x00FF00 {
		t.Errorf("device %#x class %#x, want 0x1045 (modern virtio-balloon) class 0x00ff00 as QEMU", id, class)
	}
	if r.FindCap(pci.CapIDVendor, virtio.PCICapDeviceCfg) == 0 {
		t.Error("no device configuration capability")
	}
	want := uint64(virtio.FeatureVersion1 | FeatureStatsVQ | FeatureDeflateOnOOM | FeatureReporting)
	got := r.DeviceFeatures()
	if got&want != want || got&(FeatureMustTellHost|FeatureFreePageHint|FeaturePagePoison) != 0 {
		t.Errorf("offered %#x: want %#x and no MUST_TELL_HOST, FREE_PAGE_HINT, PAGE_POISON", got, want)
	}
	if n := r.Common(virtio.CommonNumQueues, 2); n != maxQueues {
		t.Errorf("num_queues %d, want 4", n)
	}
	for i, want := range []uint64{128, 128, 128, 32} { // QEMU's
		r.SetCommon(virtio.CommonQueueSelect, 2, uint64(i))
		if s := r.Common(virtio.CommonQueueSize, 2); s != want {
			t.Errorf("queue %d size %d, want %d", i, s, want)
		}
	}
}

// TestConfig: num_pages follows the host's target, a change raises the
// configuration interrupt once the driver runs; actual takes the
// driver's writes of any width, num_pages ignores them.
func TestConfig(t *testing.T) {
	r := newRig(t, 16<<20)
	if err := r.dev.SetTarget(4 << 20); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint32(r.DeviceConfig(ConfigNumPages, 4)); got != 1024 {
		t.Errorf("num_pages before the driver: %d, want 1024", got)
	}
	r.initDriver(t, allFeatures, linuxStats(8<<20, 1))
	cfgVector := maxQueues
	before, gen := r.Router.Fired(cfgVector), r.Common(virtio.CommonConfigGeneration, 1)
	if err := r.dev.SetTarget(8 << 20); err != nil {
		t.Fatal(err)
	}
	if !r.Router.WaitFired(cfgVector, before, waitTime) {
		t.Error("no configuration interrupt after the target changed")
	}
	if g := r.Common(virtio.CommonConfigGeneration, 1); g == gen {
		t.Error("config_generation did not move")
	}
	if got := binary.LittleEndian.Uint32(r.DeviceConfig(ConfigNumPages, 4)); got != 2048 {
		t.Errorf("num_pages %d, want 2048", got)
	}
	cfg := r.BAR + virtio.DeviceCfgOffset
	r.MMIOWrite(cfg+ConfigActual, 4, 0x12345678)
	if s := r.dev.State(); s.Actual != 0x12345678 {
		t.Errorf("actual %#x after a 32-bit write", s.Actual)
	}
	r.MMIOWrite(cfg+ConfigActual+2, 2, 0xABCD) // a partial write keeps the other bytes
	if s := r.dev.State(); s.Actual != 0xABCD5678 {
		t.Errorf("actual %#x after a 16-bit write of the high half", s.Actual)
	}
	r.MMIOWrite(cfg+ConfigNumPages, 8, 0xFFFFFFFF_FFFFFFFF) // spans both fields
	st := r.dev.State()
	if st.NumPages != 2048 || st.Actual != 0xFFFFFFFF {
		t.Errorf("after a 64-bit write: num_pages %d actual %#x, want 2048 and all ones", st.NumPages, st.Actual)
	}
	if st.ActualUpdates != 3 || !st.Active || st.Features != allFeatures || !st.StatsQueue || !st.ReportingQueue {
		t.Errorf("state %+v", st)
	}
	for _, bad := range []uint64{4097, 17 << 20} {
		if err := r.dev.SetTarget(bad); !errors.Is(err, accounting.ErrTarget) {
			t.Errorf("SetTarget(%d): %v, want ErrTarget", bad, err)
		}
	}
	if r.ledger.Target() != 8<<20 {
		t.Errorf("a refused target changed the target to %d", r.ledger.Target())
	}
}

// TestInflateDeflate follows fill_balloon and leak_balloon: arrays of up
// to 256 PFNs; inflated memory leaves the host (mincore) and reads zero;
// deflated pages work again.
func TestInflateDeflate(t *testing.T) {
	r := newRig(t, 16<<20)
	d := r.initDriver(t, allFeatures, linuxStats(8<<20, 1))
	const base, size = 8 << 20, 2 << 20 // 512 pages
	r.touch(t, base, size)
	if got := r.resident(t, base, size); got != size {
		t.Fatalf("touched range: %d bytes resident", got)
	}
	pfns := pfnRange(base, 512)
	// Linux's pages come off the allocator in no particular order.
	for i, j := 0, len(pfns)-1; i < j; i, j = i+2, j-2 {
		pfns[i], pfns[j] = pfns[j], pfns[i]
	}
	r.tell(t, d.inflate, r.pfnArray(t, pfns[:256]))
	r.tell(t, d.inflate, r.pfnArray(t, pfns[256:]))
	if got := r.resident(t, base, size); got != 0 {
		t.Errorf("inflated range: %d bytes still resident", got)
	}
	if v, _ := r.Mem.ReadU64(base + 0x5000); v != 0 {
		t.Errorf("an inflated page reads %#x, want 0", v)
	}
	st := r.ledger.Stats()
	if st.Held4K != 512 || st.HeldBytes != size || st.ReturnedBytes != size || st.Commands["inflate"] != 2 {
		t.Errorf("after inflating: %+v", st)
	}
	r.tell(t, d.deflate, r.pfnArray(t, pfns[:300]))
	if st := r.ledger.Stats(); st.Held4K != 212 || st.Commands["deflate"] != 1 {
		t.Errorf("after deflating 300: held %d, commands %v", st.Held4K, st.Commands)
	}
	if err := r.Mem.WriteU64(base, 77); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Mem.ReadU64(base); v != 77 {
		t.Error("a deflated page does not keep a write")
	}
	m := r.dev.Metrics()
	if m.PagesInflated != 512 || m.PagesDeflated != 300 || m.PagesRefused != 0 || m.MalformedBuffers != 0 {
		t.Errorf("metrics %+v", m)
	}
	if s := r.Status(); s&virtio.StatusNeedsReset != 0 {
		t.Errorf("status %#x", s)
	}
}

// TestBadPFNs: PFNs outside RAM, pages held twice or not held, broken
// arrays: each refused and counted, the device keeps working.
func TestBadPFNs(t *testing.T) {
	r := newRig(t, 16<<20)
	d := r.initDriver(t, allFeatures, linuxStats(8<<20, 1))
	const page = 9 << 20
	r.tell(t, d.inflate, r.pfnArray(t, []uint32{
		page >> PFNShift,     // good
		page >> PFNShift,     // the same page again: already held
		16 << 20 >> PFNShift, // the first page past RAM
		0xC0000,              // the 32-bit MMIO hole
		math.MaxUint32,       // 16 TiB
	}))
	r.tell(t, d.deflate, r.pfnArray(t, []uint32{page>>PFNShift + 1, math.MaxUint32}))
	// A partial PFN: the whole ones count, the tail is malformed.
	buf := r.pfnArray(t, []uint32{page>>PFNShift + 2, 0xdead})
	buf.Len = 6
	r.tell(t, d.inflate, buf)
	// PFNs in a device-writable buffer: malformed, ignored.
	w := r.pfnArray(t, []uint32{page>>PFNShift + 3})
	w.Write = true
	r.tell(t, d.inflate, w)
	st := r.ledger.Stats()
	for kind, n := range map[string]uint64{"page_already_held": 1, "page_not_ram": 4, "page_not_held": 1, "batch_invalid": 2} {
		if st.Errors[kind] != n {
			t.Errorf("errors[%s] = %d, want %d (%v)", kind, st.Errors[kind], n, st.Errors)
		}
	}
	if st.Held4K != 2 || !r.ledger.Holds(page, accounting.Page4K) || !r.ledger.Holds(page+2<<PFNShift, accounting.Page4K) {
		t.Errorf("held %d pages", st.Held4K)
	}
	if m := r.dev.Metrics(); m.PagesInflated != 2 || m.PagesRefused != 6 || m.MalformedBuffers != 2 {
		t.Errorf("metrics %+v", m)
	}
	if s := r.Status(); s&virtio.StatusNeedsReset != 0 {
		t.Errorf("status %#x: bad PFNs must not break the device", s)
	}
	// Still serving.
	r.tell(t, d.inflate, r.pfnArray(t, []uint32{page>>PFNShift + 4}))
	if st := r.ledger.Stats(); st.Held4K != 3 {
		t.Errorf("held %d after one more inflate", st.Held4K)
	}
}

// TestStatsRoundTrip: the primed buffer is read at DRIVER_OK and kept; a
// host request returns it, the driver refills it (stats_handle_request),
// and the request returns the fresh values. Without an answer the request
// times out with the last values.
func TestStatsRoundTrip(t *testing.T) {
	r := newRig(t, 16<<20)
	d := r.initDriver(t, allFeatures, linuxStats(8<<20, 1))
	r.waitPrimed(t)
	st := r.dev.State()
	if st.GuestStats == nil || st.GuestStats.Values["free_memory"] != 8<<20 || len(st.GuestStats.Values) != 10 {
		t.Fatalf("primed statistics: %+v", st.GuestStats)
	}
	if _, _, ok := d.stats.NextUsed(); ok {
		t.Fatal("the device returned the primed buffer without a request")
	}

	// The driver's stats work: wait for the buffer, refill it, kick.
	answered := make(chan struct{})
	answer := func(free, minflt uint64) {
		// The next round's driver work waits for this one's (the race
		// detector cannot see the ordering the ring gives).
		defer func() { answered <- struct{}{} }()
		if _, _, ok := d.stats.WaitUsed(waitTime); !ok {
			t.Error("the host request did not return the statistics buffer")
			return
		}
		s := linuxStats(free, minflt)
		r.writeStats(t, d.statsBuf, s)
		d.stats.AddAndPublish(virtiotest.Buf{Addr: d.statsBuf, Len: uint32(StatEntrySize * len(s))})
		r.Notify(d.stats.Index)
	}
	for round := uint64(2); round <= 4; round++ {
		go answer(4<<20, round)
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		g, err := r.dev.RequestStats(ctx)
		cancel()
		<-answered
		if err != nil || !g.Fresh || g.Values["minor_faults"] != round || g.Values["free_memory"] != 4<<20 ||
			g.Values["available_memory"] != 5<<20 || g.Values["total_memory"] != 16<<20 {
			t.Fatalf("round %d: %+v, %v", round, g, err)
		}
	}

	// Nobody answers: the last values, not fresh, after the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	g, err := r.dev.RequestStats(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || g.Fresh || g.Values["minor_faults"] != 4 {
		t.Errorf("unanswered request: %+v, %v", g, err)
	}
	// The buffer is with the driver now: the next request has none to
	// return and waits for the driver's late answer.
	type result struct {
		g   GuestStats
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		g, err := r.dev.RequestStats(ctx)
		res <- result{g, err}
	}()
	for deadline := time.Now().Add(waitTime); r.dev.Metrics().StatsRequests < 5 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	go answer(2<<20, 9)
	<-answered
	if got := <-res; got.err != nil || !got.g.Fresh || got.g.Values["minor_faults"] != 9 {
		t.Errorf("late answer: %+v, %v", got.g, got.err)
	}
	m := r.dev.Metrics()
	if m.StatsUpdates != 5 || m.StatsRequests != 5 || m.StatsTimeouts != 1 || m.MalformedBuffers != 0 {
		t.Errorf("metrics %+v", m)
	}
	if c := r.ledger.Stats().Commands["stats"]; c != 5 {
		t.Errorf("commands[stats] = %d", c)
	}
}

// TestWithoutStatsQueue: without STATS_VQ, Linux numbers the reporting
// queue 2; RequestStats says there is no statistics queue.
func TestWithoutStatsQueue(t *testing.T) {
	r := newRig(t, 16<<20)
	d := r.initDriver(t, virtio.FeatureVersion1|FeatureReporting, nil)
	if d.reporting.Index != 2 {
		t.Fatalf("reporting queue %d", d.reporting.Index)
	}
	const base = 8 << 20
	r.touch(t, base, 2<<20)
	r.tell(t, d.reporting, virtiotest.Buf{Addr: base, Len: 2 << 20, Write: true})
	if got := r.resident(t, base, 2<<20); got != 0 {
		t.Errorf("reported range: %d bytes resident", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := r.dev.RequestStats(ctx); !errors.Is(err, ErrNoStats) {
		t.Errorf("RequestStats: %v, want ErrNoStats", err)
	}
	if st := r.dev.State(); st.StatsQueue || !st.ReportingQueue {
		t.Errorf("state %+v", st)
	}
}

// TestReporting: free page reporting as page_reporting sends it (an
// indirect scatter-gather list of 2 MiB blocks, device-writable); every
// range leaves the host, the buffer comes back, nothing is ballooned.
func TestReporting(t *testing.T) {
	r := newRig(t, 32<<20)
	d := r.initDriver(t, allFeatures, linuxStats(8<<20, 1))
	const a, b = 16 << 20, 20 << 20
	r.touch(t, a, 2<<20)
	r.touch(t, b, 4<<20)
	head := d.reporting.AddIndirect(virtiotest.Buf{Addr: a, Len: 2 << 20, Write: true},
		virtiotest.Buf{Addr: b, Len: 4 << 20, Write: true})
	d.reporting.Publish(head)
	r.Notify(d.reporting.Index)
	if id, n, ok := d.reporting.WaitUsed(waitTime); !ok || id != head || n != 0 {
		t.Fatalf("report not returned: id %d len %d ok %v", id, n, ok)
	}
	if ra, rb := r.resident(t, a, 2<<20), r.resident(t, b, 4<<20); ra != 0 || rb != 0 {
		t.Errorf("reported ranges still resident: %d and %d bytes", ra, rb)
	}
	// The guest keeps using them.
	if err := r.Mem.WriteU64(a, 5); err != nil {
		t.Fatal(err)
	}
	// A misaligned range is skipped, the rest of the list served.
	r.touch(t, b, 1<<20)
	r.tell(t, d.reporting, virtiotest.Buf{Addr: a + 100, Len: 4096, Write: true},
		virtiotest.Buf{Addr: b, Len: 1 << 20, Write: true})
	m := r.dev.Metrics()
	if m.ReportedRanges != 3 || m.ReportedBytes != 7<<20 || m.ReportRefused != 1 {
		t.Errorf("metrics %+v", m)
	}
	st := r.ledger.Stats()
	if st.HeldBytes != 0 || st.ReturnedBytes != 0 || st.Commands["report"] != 2 || st.Errors["page_misaligned"] != 1 {
		t.Errorf("ledger %+v: reported memory is not ballooned", st)
	}
}

// TestReset: a reset (Linux: unload, S3 resume) forgets the held pages as
// the guest does, actual and the statistics buffer; the driver can start
// over, and a pending statistics request ends.
func TestReset(t *testing.T) {
	r := newRig(t, 16<<20)
	d := r.initDriver(t, allFeatures, linuxStats(8<<20, 1))
	if err := r.dev.SetTarget(1 << 20); err != nil {
		t.Fatal(err)
	}
	r.tell(t, d.inflate, r.pfnArray(t, pfnRange(8<<20, 256)))
	r.MMIOWrite(r.BAR+virtio.DeviceCfgOffset+ConfigActual, 4, 256)
	r.waitPrimed(t)
	// Two requests the driver never answers: the first returns the
	// buffer, the second waits for the same answer; the reset ends both.
	done := make(chan error, 2)
	for range 2 {
		go func() { _, err := r.dev.RequestStats(context.Background()); done <- err }()
	}
	time.Sleep(50 * time.Millisecond)
	r.SetStatus(0)
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, ErrNoStats) {
				t.Errorf("RequestStats across the reset: %v, want ErrNoStats", err)
			}
		case <-time.After(waitTime):
			t.Fatal("RequestStats still waiting after the reset")
		}
	}
	st, s := r.ledger.Stats(), r.dev.State()
	if st.HeldBytes != 0 || s.Actual != 0 || s.Active || s.ResetsHolding != 1 || st.TargetBytes != 1<<20 {
		t.Errorf("after the reset: ledger %+v, state %+v", st, s)
	}
	// The driver starts over (virtballoon_restore): the same pages again.
	d = r.initDriver(t, allFeatures, linuxStats(8<<20, 1))
	r.tell(t, d.inflate, r.pfnArray(t, pfnRange(8<<20, 256)))
	if st := r.ledger.Stats(); st.Held4K != 256 || st.Errors["page_already_held"] != 0 {
		t.Errorf("after re-inflating: %+v", st)
	}
}

// TestDeflateOnOOM: with DEFLATE_ON_OOM the guest deflates below the
// target by itself (virtio_balloon_oom_notify); that is accounted like any
// deflate, not refused.
func TestDeflateOnOOM(t *testing.T) {
	r := newRig(t, 16<<20)
	d := r.initDriver(t, allFeatures, linuxStats(8<<20, 1))
	if err := r.dev.SetTarget(512 << PFNShift); err != nil {
		t.Fatal(err)
	}
	r.tell(t, d.inflate, r.pfnArray(t, pfnRange(8<<20, 256)))
	r.tell(t, d.inflate, r.pfnArray(t, pfnRange(9<<20, 256)))
	r.tell(t, d.deflate, r.pfnArray(t, pfnRange(9<<20, 256)))
	r.MMIOWrite(r.BAR+virtio.DeviceCfgOffset+ConfigActual, 4, 256)
	st, s := r.ledger.Stats(), r.dev.State()
	if st.Held4K != 256 || s.Actual != 256 || s.NumPages != 512 || st.Errors["page_not_held"] != 0 {
		t.Errorf("after an OOM deflate: held %d, state %+v, errors %v", st.Held4K, s, st.Errors)
	}
}

// TestShutdownKeepsLedger: the machine's closing reset (after Shutdown) is
// not the guest's and keeps what the balloon held, for the last stats.
func TestShutdownKeepsLedger(t *testing.T) {
	r := newRig(t, 16<<20)
	d := r.initDriver(t, allFeatures, linuxStats(8<<20, 1))
	r.tell(t, d.inflate, r.pfnArray(t, pfnRange(8<<20, 16)))
	r.dev.Shutdown()
	if err := r.Transport.Close(); err != nil {
		t.Fatal(err)
	}
	if st := r.ledger.Stats(); st.Held4K != 16 || r.dev.Metrics().ResetsHolding != 0 {
		t.Errorf("after the closing reset: held %d, metrics %+v", st.Held4K, r.dev.Metrics())
	}
}
