package guesttest

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVirtioBalloonQEMU runs virtioballoon under QEMU's virtio-balloon-pci
// (modern only, deflate-on-oom and free-page-reporting on, as kvmm offers),
// its oracle, on q35. The host's side goes through QEMU's monitor while the
// guest runs its event loop: `balloon 124` (QEMU's target is the size the
// guest keeps, not the balloon's: 128 MiB - 124 MiB = 4 MiB, num_pages
// 1024), `info balloon` until the guest's actual shows it inflated, the
// guest's statistics through the device's guest-stats property (QEMU asks
// the guest for them every guest-stats-polling-interval seconds; `info
// balloon` shows only actual), then `balloon 128` (num_pages 0) and the
// guest deflates, reports free pages and passes. No serial output is needed
// to pace the host: the monitor shows every step.
func TestVirtioBalloonQEMU(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	path := BuildT(t, "virtioballoon")
	monitor := filepath.Join(t.TempDir(), "monitor.sock")
	ctx, cancel := context.WithTimeout(context.Background(), firmwareTimeout)
	defer cancel()
	type result struct {
		res QEMUResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := RunQEMU(ctx, path, "q35", 1,
			"-device", "virtio-balloon-pci,id=bal0,disable-legacy=on,deflate-on-oom=on,free-page-reporting=on",
			"-monitor", "unix:"+monitor+",server=on,wait=off")
		done <- result{res, err}
	}()
	// fail ends the test with QEMU's output (the context kills QEMU).
	fail := func(format string, args ...any) {
		t.Helper()
		cancel()
		r := <-done
		t.Fatalf("%s\n%s\nserial:\n%s\nqemu log:\n%s", fmt.Sprintf(format, args...), strings.Join(r.res.Args, " "),
			r.res.Serial, r.res.Log)
	}
	var mon *s3Monitor
	for end := time.Now().Add(30 * time.Second); mon == nil; time.Sleep(50 * time.Millisecond) {
		var err error
		if mon, err = dialS3Monitor(monitor); err != nil && time.Now().After(end) {
			fail("connecting to the QEMU monitor: %v", err)
		}
	}
	defer mon.conn.Close()
	command := func(c string) string {
		t.Helper()
		out, err := mon.command(c)
		if err != nil {
			fail("monitor command %q: %v", c, err)
		}
		return out
	}
	// until sends c every 100 ms until its output contains want.
	until := func(c, want string) time.Duration {
		t.Helper()
		start := time.Now()
		for end := start.Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			if strings.Contains(command(c), want) {
				return time.Since(start)
			}
			select {
			case r := <-done:
				done <- r
				fail("QEMU exited while the test waited for %q from %q", want, c)
			default:
			}
			if time.Now().After(end) {
				fail("%q never showed %q", c, want)
			}
		}
	}

	command("qom-set /machine/peripheral/bal0 guest-stats-polling-interval 1")
	command("balloon 124")
	t.Logf("inflated (info balloon: actual=124) after %v", until("info balloon", "actual=124").Round(time.Millisecond))

	// The guest's statistics once it has answered a request since
	// inflating: its free memory is its RAM less 8 MiB less the balloon.
	var stats struct {
		Stats      map[string]uint64 `json:"stats"`
		LastUpdate int64             `json:"last-update"`
	}
	for end := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		out := command("qom-get /machine/peripheral/bal0 guest-stats")
		i, j := strings.Index(out, "{"), strings.LastIndex(out, "}")
		if i < 0 || j < i {
			fail("qom-get guest-stats: %q", out)
		}
		if err := json.Unmarshal([]byte(out[i:j+1]), &stats); err != nil {
			fail("qom-get guest-stats: %v in %q", err, out)
		}
		total, free := stats.Stats["stat-total-memory"], stats.Stats["stat-free-memory"]
		if stats.LastUpdate != 0 && total > 12<<20 && free == total-12<<20 {
			break
		}
		if time.Now().After(end) {
			fail("the guest's statistics never showed the balloon: %+v", stats)
		}
	}
	t.Logf("guest statistics through QEMU: %v", stats.Stats)
	if s := stats.Stats; s["stat-available-memory"] != s["stat-free-memory"]+1<<20 || s["stat-disk-caches"] != 1<<20 ||
		s["stat-minor-faults"] < 2 {
		t.Errorf("guest statistics %v", s)
	}

	command("balloon 128")
	t.Logf("deflated (info balloon: actual=128) after %v", until("info balloon", "actual=128").Round(time.Millisecond))

	r := <-done
	t.Logf("%s", strings.Join(r.res.Args, " "))
	t.Logf("q35: %s (status %d) in %v; serial:\n%s", r.res.Ending, r.res.ExitStatus, r.res.Duration.Round(time.Millisecond), r.res.Serial)
	if r.err != nil {
		t.Fatalf("RunQEMU: %v", r.err)
	}
	expectVerdict(t, r.res, "virtioballoon", true)
	expectLines(t, r.res,
		"  device features 0x0000010130000036, driver features 0x0000000130000026\n",
		"  queues: inflate 0, deflate 1, stats 2, reporting 3, of 64, 64, 64 and 32 entries, no MSI-X vector\n",
		"  stats queue primed: 10 statistics, kicked\n",
		"virtioballoon: config change: num_pages 1024 (holding 0)\n",
		"  inflate: 256 PFNs, holding 1024\n",
		"virtioballoon: inflated 1024 pages (4 MiB), actual 1024\n",
		"virtioballoon: hostile inflate buffer (past RAM, MMIO hole, 0xffffffff, a held page) used\n",
		"virtioballoon: config change: num_pages 0 (holding 1024)\n",
		"  deflate: 256 PFNs, holding 0\n",
		"virtioballoon: deflated to 0: the pages read as zero and take writes again\n",
		"virtioballoon: reported 2 free 2 MiB blocks in one device-writable sg list (indirect): buffer returned, used length 0\n",
		"virtioballoon: the reported blocks read as zero\n",
		"virtioballoon: freeze/restore: reset and set up again, num_pages 0",
		"virtioballoon: passed\n")
	if strings.Contains(r.res.Serial, "FAIL ") {
		t.Errorf("guest reported a failure")
	}
}
