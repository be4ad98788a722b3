package vmm

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/balloon"
	"github.com/kvmm/kvmm/internal/guesttest"
)

// virtio-balloon under real /dev/kvm. The test guest
// testdata/guests/virtioballoon.S follows Linux 6.1's virtio_balloon; it
// runs under QEMU's virtio-balloon-pci too (internal/guesttest), which
// proves the guest right, and here proves kvmm right.

// newVirtioBalloonVM builds (does not start) a VM with --balloon virtio.
func newVirtioBalloonVM(t *testing.T, guest string) (*VM, *SerialBuffer) {
	t.Helper()
	requireKVM(t)
	cfg := guestConfig(t, guest, 1)
	cfg.Balloon = BalloonVirtio
	var out SerialBuffer
	vm, err := New(cfg, Options{Serial: &out, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { vm.Stop("test done") })
	return vm, &out
}

func TestValidateVirtioBalloon(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Balloon = BalloonVirtio
	if err := cfg.Validate(); err != nil {
		t.Errorf("--balloon virtio refused: %v", err)
	}
	cfg.PCIBus = 2
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "balloon virtio") {
		t.Errorf("virtio-balloon on a bus without its bridge: %v", err)
	}
	cfg = DefaultConfig()
	if cfg.balloonKind() != BalloonNone {
		t.Errorf("personality kvm's default balloon is %q, want none (virtio needs --balloon virtio)", cfg.balloonKind())
	}
}

// TestVirtioBalloonWithoutDriver: a guest that never loads the driver (the
// idle guest) still has the device: the target is kept for the driver to
// read, a reboot carries it over, and the stats do not wait for
// statistics nobody will send.
func TestVirtioBalloonWithoutDriver(t *testing.T) {
	vm, out := newVirtioBalloonVM(t, "idle")
	st, err := vm.SetBalloonTarget(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if st.Kind != BalloonVirtio || st.Virtio == nil || st.Virtio.Active || st.Virtio.NumPages != 2048 {
		t.Errorf("stats %+v, virtio %+v", st, st.Virtio)
	}
	if _, err := vm.SetBalloonTarget(1 << 40); !errors.Is(err, balloon.ErrTarget) {
		t.Errorf("target beyond RAM: %v, want balloon.ErrTarget", err)
	}
	// A reboot builds a new machine; the target carries over.
	nm, err := newMachine(vm.cfg, vm.kvm.Fd(), io.Discard, vm, vm.log)
	if err != nil {
		t.Fatal(err)
	}
	if got := nm.virtioBalloon().Ledger().Target(); got != 8<<20 {
		t.Errorf("new machine's target %d, want %d", got, 8<<20)
	}
	nm.close()

	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := out.WaitFor(ctx, "idle: ready"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st, err = vm.BalloonStats()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > balloonStatsWait/2 || st.Virtio.GuestStats != nil {
		t.Errorf("BalloonStats took %v without a driver, guest statistics %+v", d, st.Virtio.GuestStats)
	}
}

// TestVirtioBalloonGuest boots virtioballoon.S with --balloon virtio: the
// guest probes the device as Linux does and waits; the test sets the target
// through the VM's Go API (the code behind PUT /vm/balloon), checks that
// the 4 MiB the guest inflated left the host (mincore), reads the guest's
// statistics (GET /vm/balloon asks for fresh ones), sets the target to 0,
// checks free page reporting gave the reported blocks back, and waits for
// the guest's PASS.
func TestVirtioBalloonGuest(t *testing.T) {
	vm, out := newVirtioBalloonVM(t, "virtioballoon")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	wait := func(line string) { t.Helper(); waitSerial(ctx, t, vm, out, line) }
	m := vm.m
	const (
		inflated = 4 << 20
		base     = 16 << 20 // the guest's balloon pages
		reportA  = 24 << 20 // its reported blocks
		reportB  = 28 << 20
	)
	resident := func(gpa, n uint64) uint64 {
		t.Helper()
		r, err := m.mem.Resident(gpa, n)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	wait("virtioballoon: ready, waiting for the host's target")
	guestBefore, rssBefore, rangeBefore := guestResident(t, m), processRSS(t), resident(base, inflated)
	st, err := vm.SetBalloonTarget(inflated)
	if err != nil {
		t.Fatalf("SetBalloonTarget: %v", err)
	}
	if st.Kind != BalloonVirtio || st.TargetBytes != inflated || st.Virtio == nil || !st.Virtio.Active ||
		st.Virtio.NumPages != 1024 || !st.Virtio.StatsQueue || !st.Virtio.ReportingQueue {
		t.Errorf("stats after SetBalloonTarget: %+v, virtio %+v", st, st.Virtio)
	}

	wait("virtioballoon: hostile inflate buffer")
	guestAfter, rssAfter, rangeAfter := guestResident(t, m), processRSS(t), resident(base, inflated)
	t.Logf("guest RAM resident (mincore): before inflation %d KiB, after %d KiB: %d KiB given back",
		guestBefore>>10, guestAfter>>10, int64(guestBefore-guestAfter)>>10)
	t.Logf("the inflated range [16M, 20M): %d KiB resident before, %d KiB after", rangeBefore>>10, rangeAfter>>10)
	t.Logf("process RSS (smaps_rollup): before %d KiB, after %d KiB", rssBefore>>10, rssAfter>>10)
	if rangeBefore != inflated || rangeAfter != 0 {
		t.Errorf("the inflated range: %d bytes resident before, %d after; want %d and 0", rangeBefore, rangeAfter, inflated)
	}
	if guestBefore < guestAfter || guestBefore-guestAfter < inflated-64<<10 {
		t.Errorf("guest RAM resident fell by %d KiB, want about %d KiB", int64(guestBefore-guestAfter)>>10, inflated>>10)
	}

	// GET /vm/balloon: fresh statistics from the guest, twice.
	st, err = vm.BalloonStats()
	if err != nil {
		t.Fatal(err)
	}
	g := st.Virtio.GuestStats
	if g == nil || !g.Fresh {
		t.Fatalf("no fresh guest statistics: %+v", st.Virtio)
	}
	total := g.Values["total_memory"]
	if total < 120<<20 || g.Values["free_memory"] != total-8<<20-inflated ||
		g.Values["available_memory"] != g.Values["free_memory"]+1<<20 || len(g.Values) != 10 {
		t.Errorf("guest statistics %v: want free = total - 8 MiB - the balloon", g.Values)
	}
	if st.Held4K != 1024 || st.HeldBytes != inflated || st.ReturnedBytes != inflated || st.Virtio.Actual != 1024 {
		t.Errorf("inflated: held %d pages (%d bytes), returned %d, actual %d", st.Held4K, st.HeldBytes, st.ReturnedBytes, st.Virtio.Actual)
	}
	for kind, n := range map[string]uint64{"page_not_ram": 3, "page_already_held": 1} {
		if st.Errors[kind] != n {
			t.Errorf("errors[%s] = %d, want %d (all: %v)", kind, st.Errors[kind], n, st.Errors)
		}
	}
	if st.Commands["inflate"] != 5 || st.Virtio.PagesRefused != 4 {
		t.Errorf("commands %v, refused %d", st.Commands, st.Virtio.PagesRefused)
	}
	minflt := g.Values["minor_faults"]
	st, err = vm.BalloonStats()
	if err != nil {
		t.Fatal(err)
	}
	if g := st.Virtio.GuestStats; !g.Fresh || g.Values["minor_faults"] != minflt+1 {
		t.Errorf("a second request: %+v, want fresh statistics with minor_faults %d", g, minflt+1)
	}
	t.Logf("guest statistics: %v", st.Virtio.GuestStats.Values)

	if _, err := vm.SetBalloonTarget(0); err != nil {
		t.Fatal(err)
	}
	wait("virtioballoon: deflated to 0")
	wait("virtioballoon: reported 2 free 2 MiB blocks")
	if ra, rb := resident(reportA, 2<<20), resident(reportB, 2<<20); ra != 0 || rb != 0 {
		t.Errorf("reported blocks still resident: %d and %d bytes", ra, rb)
	}
	// This request is also what the guest waits for before it reads the
	// reported blocks again.
	st, err = vm.BalloonStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.HeldBytes != 0 || st.Commands["deflate"] != 4 || st.Virtio.ReportedBytes != 4<<20 ||
		st.Virtio.ReportedRanges != 2 || st.Commands["report"] != 1 || st.ReturnedBytes != inflated {
		t.Errorf("after deflating and reporting: %+v, virtio %+v", st, st.Virtio)
	}

	res, err := vm.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v\nserial:\n%s", err, out.String())
	}
	transcript := out.String()
	expect(t, transcript, res, guesttest.PassStatus,
		"virtio-balloon 00:",
		"  device features 0x0000000130000026, driver features 0x0000000130000026",
		"  queues: inflate 0, deflate 1, stats 2, reporting 3, of 64, 64, 64 and 32 entries, no MSI-X vector",
		"  stats queue primed: 10 statistics, kicked",
		"  DRIVER_OK; num_pages 0, actual 0",
		"virtioballoon: config change: num_pages 1024 (holding 0)",
		"  inflate: 256 PFNs, holding 1024",
		"virtioballoon: inflated 1024 pages (4 MiB), actual 1024",
		"virtioballoon: hostile inflate buffer (past RAM, MMIO hole, 0xffffffff, a held page) used",
		"virtioballoon: config change: num_pages 0 (holding 1024)",
		"  deflate: 256 PFNs, holding 0",
		"virtioballoon: deflated to 0: the pages read as zero and take writes again",
		"virtioballoon: reported 2 free 2 MiB blocks in one device-writable sg list (indirect): buffer returned, used length 0",
		"virtioballoon: the reported blocks read as zero",
		"virtioballoon: freeze/restore: reset and set up again, num_pages 0, configuration interrupts seen 2",
		guesttest.PassLine("virtioballoon"))
	t.Logf("guest transcript:\n%s", transcript)
	st, err = vm.BalloonStats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("final: target %d held %d returned %d commands %v errors %v virtio %+v",
		st.TargetBytes, st.HeldBytes, st.ReturnedBytes, st.Commands, st.Errors, *st.Virtio)
	if _, err := vm.SetBalloonTarget(4096); !errors.Is(err, ErrState) {
		t.Errorf("SetBalloonTarget on a stopped VM: %v, want ErrState", err)
	}
}
