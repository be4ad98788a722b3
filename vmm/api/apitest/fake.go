// Package apitest provides a fake VM for tests of the API server, its
// client and the commands that use them, so that none of them needs KVM.
package apitest

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/kvmm/kvmm/devices"
	"github.com/kvmm/kvmm/vmm"
)

// FakeVM implements api.VMController with the real VM's state machine and
// event semantics (buffered subscriptions that drop rather than block,
// channels closed after the stopped event) and no KVM. Its Pause takes
// PauseLatency and Resume ResumeLatency (reported, not slept). The PIO
// range "post" counts up by 10 on every Metrics call while running, like
// a guest writing to port 0x80.
type FakeVM struct {
	mu        sync.Mutex
	state     vmm.State
	cfg       vmm.Config
	started   time.Time
	subs      map[chan vmm.Event]struct{}
	done      chan struct{}
	presses   int
	resets    int
	stops     []string
	accesses  uint64 // grows on every Metrics call while running
	failPause error
	balloon   *vmm.BalloonStats // nil: no balloon (balloon.go)
}

// Latencies the fake reports for Pause and Resume.
const (
	PauseLatency  = 100 * time.Microsecond
	ResumeLatency = 50 * time.Microsecond
	WakeLatency   = 200 * time.Microsecond
)

// New returns a running fake VM with 2 vCPUs and 128 MiB.
func New() *FakeVM {
	cfg := vmm.DefaultConfig()
	cfg.CPUs = 2
	cfg.Memory = 128 << 20
	return &FakeVM{state: vmm.StateRunning, cfg: cfg, started: time.Now(),
		subs: map[chan vmm.Event]struct{}{}, done: make(chan struct{})}
}

// SetState puts the VM in a state other than stopped (use StopWith).
func (f *FakeVM) SetState(s vmm.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = s
}

// FailPause makes Pause fail with err, as a VMM error unrelated to the
// state would.
func (f *FakeVM) FailPause(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failPause = err
}

func (f *FakeVM) State() vmm.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

func (f *FakeVM) Config() vmm.Config { return f.cfg }

func (f *FakeVM) Uptime() time.Duration { return time.Since(f.started) }

func (f *FakeVM) Pause() (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPause != nil {
		return 0, f.failPause
	}
	if f.state != vmm.StateRunning {
		return 0, fmt.Errorf("pause: VM is %s, not running", f.state)
	}
	f.state = vmm.StatePaused
	f.publishLocked(vmm.Event{Type: "state", State: vmm.StatePaused})
	return PauseLatency, nil
}

func (f *FakeVM) Resume() (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != vmm.StatePaused {
		return 0, fmt.Errorf("resume: VM is %s, not paused", f.state)
	}
	f.state = vmm.StateRunning
	f.publishLocked(vmm.Event{Type: "state", State: vmm.StateRunning})
	return ResumeLatency, nil
}

// PCIDumpText is what the fake's PCIDump writes: the host bridge as
// `lspci -x` prints it (the first 64 bytes of a q35 host bridge).
const PCIDumpText = "00:00.0 Host bridge: Device 8086:29c0\n" +
	"00: 86 80 c0 29 00 00 00 00 00 00 00 06 00 00 00 00\n" +
	"10: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n" +
	"20: 00 00 00 00 00 00 00 00 00 00 00 00 f4 1a 00 11\n" +
	"30: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n\n"

// PCIDump writes PCIDumpText, or fails once the VM stopped.
func (f *FakeVM) PCIDump(w io.Writer, extended bool) error {
	if f.State() == vmm.StateStopped {
		return fmt.Errorf("pci dump: %w: VM is stopped", vmm.ErrState)
	}
	_, err := io.WriteString(w, PCIDumpText)
	return err
}

// Wake ends an S3 sleep, as vmm.VM.Wake does.
func (f *FakeVM) Wake() (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != vmm.StateSuspended {
		return 0, fmt.Errorf("wake: %w: VM is %s, not suspended", vmm.ErrState, f.state)
	}
	f.state = vmm.StateRunning
	f.publishLocked(vmm.Event{Type: "state", State: vmm.StateRunning, Detail: "woken from S3"})
	return WakeLatency, nil
}

// Suspend puts the fake in ACPI S3, as a guest writing SLP_EN does.
func (f *FakeVM) Suspend() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = vmm.StateSuspended
	f.publishLocked(vmm.Event{Type: "state", State: vmm.StateSuspended, Detail: "guest entered ACPI S3"})
}

func (f *FakeVM) PowerButton() error {
	f.mu.Lock()
	if f.state == vmm.StateSuspended {
		// On a sleeping machine the button is a wake source.
		f.mu.Unlock()
		_, err := f.Wake()
		return err
	}
	defer f.mu.Unlock()
	if f.state != vmm.StateRunning {
		return fmt.Errorf("power button: %w: VM is %s, not running", vmm.ErrState, f.state)
	}
	f.presses++
	f.publishLocked(vmm.Event{Type: "power-button"})
	return nil
}

func (f *FakeVM) HostReset() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != vmm.StateRunning && f.state != vmm.StatePaused {
		return fmt.Errorf("reset: VM is %s", f.state)
	}
	f.resets++
	f.state = vmm.StateRunning
	f.publishLocked(vmm.Event{Type: "guest-reboot"})
	return nil
}

func (f *FakeVM) Stop(reason string) {
	f.StopWith(vmm.StatusStopped, "stopped by host: "+reason)
}

// StopWith ends the VM as the real one does: the stopped event with the
// status, then every subscription closed, then Done.
func (f *FakeVM) StopWith(status int, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == vmm.StateStopped {
		return
	}
	f.stops = append(f.stops, reason)
	f.state = vmm.StateStopped
	f.publishLocked(vmm.Event{Type: "state", State: vmm.StateStopped, Detail: reason, Status: &status})
	for ch := range f.subs {
		close(ch)
	}
	f.subs = nil
	close(f.done)
}

func (f *FakeVM) Metrics(top int) vmm.Metrics {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == vmm.StateRunning {
		f.accesses += 10
	}
	m := vmm.Metrics{
		Uptime: time.Since(f.started),
		Exits:  map[string]uint64{"io": f.accesses, "hlt": 1},
		VCPUs: []vmm.VCPUMetrics{
			{ID: 0, RunTime: time.Second, Exits: map[string]uint64{"io": f.accesses}},
			{ID: 1, RunTime: time.Millisecond, Exits: map[string]uint64{"hlt": 1}},
		},
		PIO: []devices.RangeStats{
			{Name: "post", Base: 0x80, Size: 1, Accesses: f.accesses},
			{Name: "serial-com1", Base: 0x3f8, Size: 8, Accesses: 42},
			{Name: "acpi-pm", Base: 0x600, Size: 0x14, Accesses: 3},
		},
		MMIO: []devices.RangeStats{},
	}
	if top > 0 && len(m.PIO) > top {
		m.PIO = m.PIO[:top]
	}
	return m
}

func (f *FakeVM) Subscribe() (<-chan vmm.Event, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan vmm.Event, 64)
	if f.subs == nil {
		close(ch)
		return ch, func() {}
	}
	f.subs[ch] = struct{}{}
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[ch]; ok {
			delete(f.subs, ch)
			close(ch)
		}
	}
}

func (f *FakeVM) Done() <-chan struct{} { return f.done }

// Publish sends an event to every subscriber, as the VM does.
func (f *FakeVM) Publish(e vmm.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publishLocked(e)
}

func (f *FakeVM) publishLocked(e vmm.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	for ch := range f.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// Subscribers is the number of open subscriptions.
func (f *FakeVM) Subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// Counts returns the power button presses, resets, and the reasons of
// the stops so far.
func (f *FakeVM) Counts() (presses, resets int, stops []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.presses, f.resets, append([]string(nil), f.stops...)
}
