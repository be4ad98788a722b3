package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvmm/kvmm/internal/guesttest"
	"github.com/kvmm/kvmm/vmm"
)

func requireKVM(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	f.Close()
}

// TestPowerButtonGuestThroughAPI boots testdata/guests/pwrbtn.S on a real
// VM and drives it only through the API socket: the guest's port-0x80
// counter moves while it runs, freezes while it is paused and moves again
// after the resume; the power button makes its SCI handler power off, and
// the event stream reports the stop with status 0.
func TestPowerButtonGuestThroughAPI(t *testing.T) {
	requireKVM(t)
	cfg := vmm.DefaultConfig()
	cfg.Kernel = guesttest.BuildT(t, "pwrbtn")
	cfg.CPUs = 1
	cfg.Memory = 128 << 20
	cfg.Cmdline = ""
	cfg.OnReboot = vmm.OnRebootExit
	var serial vmm.SerialBuffer
	vm, err := vmm.New(cfg, vmm.Options{Serial: &serial, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("vmm.New: %v", err)
	}
	sock := filepath.Join(shortTempDir(t), "vm.sock")
	srv := NewServer(vm, Options{Logger: testLogger(t)})
	if err := srv.Start(sock); err != nil {
		vm.Stop("test: no API")
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := NewClient(sock)

	// Watch from before the start, so every event is seen.
	stream, err := c.Events(ctx)
	if err != nil {
		vm.Stop("test: no event stream")
		t.Fatal(err)
	}
	defer stream.Close()
	events := make(chan vmm.Event, 1024)
	var streamErr error // read after events is closed
	go func() {
		defer close(events)
		for {
			e, err := stream.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					streamErr = err
				}
				return
			}
			events <- e
		}
	}()

	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	defer vm.Stop("test ended") // a no-op once the guest has powered off
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nserial:\n%s", append(args, serial.String())...)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(serial.String(), "pwrbtn: ready\n") {
		if time.Now().After(deadline) {
			fail("guest not ready after 60s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// post reads the guest's counter: accesses to the "post" port range.
	post := func() uint64 {
		t.Helper()
		m, err := c.Metrics(ctx, 0)
		if err != nil {
			fail("metrics: %v", err)
		}
		for _, r := range m.PIO {
			if r.Name == "post" {
				return r.Accesses
			}
		}
		fail("no \"post\" range in %+v", m.PIO)
		return 0
	}
	const gap = 200 * time.Millisecond
	moves := func(what string) {
		t.Helper()
		a := post()
		time.Sleep(gap)
		if b := post(); b <= a {
			fail("%s: port 0x80 counter stuck at %d", what, a)
		} else {
			t.Logf("%s: port 0x80 writes %d -> %d in %v", what, a, b, gap)
		}
	}
	moves("running")

	start := time.Now()
	st, err := c.Pause(ctx)
	pauseRTT := time.Since(start)
	if err != nil {
		fail("pause: %v", err)
	}
	if info, err := c.VM(ctx); err != nil || info.State != vmm.StatePaused {
		fail("after pause: %+v, %v", info, err)
	}
	a := post()
	time.Sleep(gap)
	if b := post(); a != b {
		fail("paused: port 0x80 counter moved %d -> %d", a, b)
	}
	start = time.Now()
	rs, err := c.Resume(ctx)
	resumeRTT := time.Since(start)
	if err != nil {
		fail("resume: %v", err)
	}
	moves("resumed")
	t.Logf("pause took %v (API round trip %v), resume took %v (round trip %v)", st.Took, pauseRTT, rs.Took, resumeRTT)

	// More cycles for a latency distribution.
	var pauses, resumes []time.Duration
	for range 20 {
		p, err := c.Pause(ctx)
		if err != nil {
			fail("pause: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
		r, err := c.Resume(ctx)
		if err != nil {
			fail("resume: %v", err)
		}
		pauses, resumes = append(pauses, p.TookNS), append(resumes, r.TookNS)
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("20 cycles: pause %s; resume %s", spread(pauses), spread(resumes))
	moves("after the cycles")

	// Many clients at once on the real VM (run with -race): every answer
	// is a success or a 409, and the VM still works afterwards.
	var wg sync.WaitGroup
	errs := make(chan error, 8*25)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				var err error
				switch (w + i) % 4 {
				case 0:
					_, err = c.Pause(ctx)
				case 1:
					_, err = c.Resume(ctx)
				case 2:
					_, err = c.Metrics(ctx, 3)
				case 3:
					_, err = c.VM(ctx)
				}
				var apiErr *Error
				if err != nil && !(errors.As(err, &apiErr) && apiErr.Status == http.StatusConflict) {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent request: %v", err)
	}
	if info, err := c.VM(ctx); err == nil && info.State == vmm.StatePaused {
		if _, err := c.Resume(ctx); err != nil {
			fail("resume after the concurrent requests: %v", err)
		}
	}
	moves("after the concurrent requests")

	if _, err := c.Power(ctx, PowerButton); err != nil {
		fail("power button: %v", err)
	}
	var seen []string
	var last vmm.Event
	for e := range events {
		seen = append(seen, e.Type+":"+string(e.State))
		last = e
	}
	if streamErr != nil {
		fail("event stream: %v", streamErr)
	}
	if last.State != vmm.StateStopped || last.Status == nil || *last.Status != vmm.StatusPowerOff {
		fail("last event %+v, want stopped with status 0; events %v", last, seen)
	}
	// In order: created (the stream's first event), running, the first
	// pause and resume, the button, stopped.
	want := []string{"state:created", "state:running", "state:paused", "state:running", "power-button:", "state:stopped"}
	if !isSubsequence(want, seen) {
		fail("events %v do not contain %v in order", seen, want)
	}
	if !strings.Contains(serial.String(), "pwrbtn: power button pressed\n") {
		fail("serial output lacks the SCI handler's line")
	}
	if strings.Contains(serial.String(), "FAIL ") {
		fail("the guest reported a failure")
	}
	res, err := vm.Wait(ctx)
	if err != nil || res.Status != vmm.StatusPowerOff {
		fail("Wait: %+v, %v", res, err)
	}
}

func isSubsequence(want, got []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// spread formats min / median / max.
func spread(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	return "min " + s[0].String() + " median " + s[len(s)/2].String() + " max " + s[len(s)-1].String()
}
