package vmm

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/internal/guesttest"
)

// startGuest boots cfg and returns the VM, its serial buffer and an event
// subscription opened before the start.
func startGuest(t *testing.T, cfg Config) (*VM, *SerialBuffer, <-chan Event) {
	t.Helper()
	requireKVM(t)
	out := &SerialBuffer{}
	vm, err := New(cfg, Options{Serial: out, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	events, cancel := vm.Subscribe()
	t.Cleanup(cancel)
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Stop("test cleanup")
		<-vm.Done()
	})
	return vm, out, events
}

// waitState waits for a state event, failing after timeout.
func waitState(t *testing.T, events <-chan Event, want State, timeout time.Duration) Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("event stream ended before state %s", want)
			}
			if e.Type == "state" && e.State == want {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s state within %v", want, timeout)
		}
	}
}

func waitResult(t *testing.T, vm *VM) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := vm.Wait(ctx)
	if err != nil {
		t.Fatalf("VM did not end: %v", err)
	}
	return res
}

// TestS3WakeByHost suspends the s3 guest several times and wakes it through
// the API's operation; the guest checks it came back in real mode at its
// FACS waking vector with WAK_STS|PWRBTN_STS.
func TestS3WakeByHost(t *testing.T) {
	cfg := guestConfig(t, "s3", 2)
	cfg.Cmdline = "s3.cycles=3"
	vm, out, events := startGuest(t, cfg)
	for cycle := 1; cycle <= 3; cycle++ {
		waitState(t, events, StateSuspended, 20*time.Second)
		if _, err := vm.Pause(); err == nil {
			t.Error("pause of a suspended VM accepted")
		}
		if _, err := vm.Resume(); err == nil {
			t.Error("resume of a suspended VM accepted")
		}
		// While suspended no vCPU runs: the exit counters stand still.
		before := vm.Metrics(0).Exits["io"]
		time.Sleep(50 * time.Millisecond)
		if after := vm.Metrics(0).Exits["io"]; after != before {
			t.Errorf("cycle %d: %d I/O exits while suspended", cycle, after-before)
		}
		d, err := vm.Wake()
		if err != nil {
			t.Fatalf("cycle %d: wake: %v", cycle, err)
		}
		t.Logf("cycle %d: wake took %v", cycle, d)
	}
	res := waitResult(t, vm)
	expect(t, out.String(), res, guesttest.PassStatus, "s3: resumed in real mode", guesttest.PassLine("s3"))
	for _, v := range vm.Metrics(0).VCPUs {
		if v.RunTime <= 0 {
			t.Errorf("vcpu %d: run time %v after the guest ran", v.ID, v.RunTime)
		}
	}
	if _, err := vm.Wake(); err == nil {
		t.Error("wake of a stopped VM accepted")
	}
}

// TestS3WakeByRTCAlarm: the guest programs the CMOS alarm and RTC_EN, as
// `rtcwake -m mem` does; kvmm's RTC keeps running while suspended and wakes
// it with RTC_STS.
func TestS3WakeByRTCAlarm(t *testing.T) {
	cfg := guestConfig(t, "s3", 1)
	cfg.Cmdline = "s3.rtc"
	vm, out, events := startGuest(t, cfg)
	waitState(t, events, StateSuspended, 20*time.Second)
	res := waitResult(t, vm)
	expect(t, out.String(), res, guesttest.PassStatus, "s3: resumed in real mode", guesttest.PassLine("s3"))
}

// TestS3WakeAfter and the power button as a wake source.
func TestS3WakeAfterAndPowerButton(t *testing.T) {
	cfg := guestConfig(t, "s3", 1)
	cfg.Cmdline = "s3.cycles=2"
	cfg.WakeAfter = Duration(200 * time.Millisecond)
	vm, out, events := startGuest(t, cfg)
	waitState(t, events, StateSuspended, 20*time.Second)
	// Cycle 1 ends by the --wake-after timer; cycle 2 by the power button,
	// before the timer would.
	waitState(t, events, StateRunning, 5*time.Second)
	waitState(t, events, StateSuspended, 20*time.Second)
	if err := vm.PowerButton(); err != nil {
		t.Fatalf("power button on a suspended VM: %v", err)
	}
	res := waitResult(t, vm)
	expect(t, out.String(), res, guesttest.PassStatus, guesttest.PassLine("s3"))
	if n := strings.Count(out.String(), "s3: resumed in real mode"); n != 2 {
		t.Errorf("%d resumes, want 2", n)
	}
}
