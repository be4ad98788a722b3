package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/balloon"
	virtioballoon "github.com/kvmm/kvmm/devices/virtio/balloon"
	"github.com/kvmm/kvmm/vmm"
)

// TestPrintVirtioBalloon: `kvmm ctl balloon stats` with virtio-balloon
// shows the driver's state, free page reporting and the guest's memory.
func TestPrintVirtioBalloon(t *testing.T) {
	st := vmm.BalloonStats{Kind: vmm.BalloonVirtio,
		Stats: balloon.Stats{TargetBytes: 4 << 20, HeldBytes: 4 << 20, Held4K: 1024, ReturnedBytes: 4 << 20,
			Commands: map[string]uint64{"inflate": 5, "stats": 2}, Errors: map[string]uint64{"page_not_ram": 3}},
		Virtio: &virtioballoon.State{Active: true, Features: 1<<32 | virtioballoon.FeatureStatsVQ |
			virtioballoon.FeatureDeflateOnOOM | virtioballoon.FeatureReporting, NumPages: 1024, Actual: 1024,
			Metrics: virtioballoon.Metrics{ReportedBytes: 4 << 20, ReportedRanges: 2},
			GuestStats: &virtioballoon.GuestStats{Fresh: true, Updated: time.Now(), Values: map[string]uint64{
				"free_memory": 100 << 20, "available_memory": 101 << 20, "total_memory": 128 << 20,
				"disk_caches": 1 << 20, "minor_faults": 7, "major_faults": 0}}}}
	var b strings.Builder
	printBalloon(&b, st)
	out := b.String()
	for _, want := range []string{
		"kind          virtio\n",
		"held          4M (4K pages: 1024, 2M pages: 0)\n",
		"driver        virtio-balloon ready, features 0x100000026 (stats, deflate-on-oom, reporting), num_pages 1024, actual 1024 (4M held by the guest's count)\n",
		"reported      4M (free page reporting: 2 free ranges given back, not ballooned)\n",
		"guest memory  free 100M, available 101M, total 128M, disk caches 1M (fresh)\n",
		"guest events  major faults 0, minor faults 7, swapped in ?, swapped out ?\n",
		"inflate",
		"page_not_ram",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	st.Virtio.GuestStats.Fresh = false
	st.Virtio.GuestStats.Updated = time.Now().Add(-3 * time.Second)
	b.Reset()
	printBalloon(&b, st)
	if !strings.Contains(b.String(), "(not fresh: the guest did not answer, these are 3s old)") {
		t.Errorf("stale statistics:\n%s", b.String())
	}
	st.Virtio.GuestStats = nil
	b.Reset()
	printBalloon(&b, st)
	if !strings.Contains(b.String(), "guest memory  (no statistics from the guest's driver)\n") {
		t.Errorf("no statistics:\n%s", b.String())
	}
}
