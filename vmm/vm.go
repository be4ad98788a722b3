// Package vmm builds and runs one virtual machine: config validation, the
// machine (KVM VM, RAM, devices, vCPUs), the VM state machine, pause and
// resume, and the exit status. It is the Go API a test suite uses:
//
//	cfg := vmm.DefaultConfig()
//	cfg.Kernel = "vmlinux"
//	vm, err := vmm.New(cfg, vmm.Options{Serial: &out})
//	res, err := vm.Run(ctx)
package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/acpi"
	"github.com/kvmm/kvmm/kvmext"
	"github.com/kvmm/kvmm/vcpu"
)

// State is the VM's lifecycle state.
type State string

const (
	StateCreated   State = "created"
	StateRunning   State = "running"
	StatePaused    State = "paused"
	StateSuspended State = "suspended"
	StateStopped   State = "stopped"
)

// Exit statuses kvmm gives for ways a guest can end other than a poweroff
// (0) or a debug-exit write (always odd: (value << 1) | 1).
const (
	StatusPowerOff      = 0
	StatusVMMError      = 1
	StatusTripleFault   = 124
	StatusInternalError = 125
	StatusGuestCrashed  = 126 // the guest reported a crash (Hyper-V crash MSRs)
	StatusStopped       = 130 // stopped by the host (Stop, context cancel)
)

// ErrState is wrapped by every error that refuses an operation because of
// the VM's state (resuming a running VM, pausing a stopped one): the caller
// asked for something that makes no sense now, nothing failed.
var ErrState = errors.New("operation not valid in this state")

// Result is how a VM ended.
type Result struct {
	Status int    `json:"status"`
	Reason string `json:"reason"`
}

// Options are the host-side attachments of a VM.
type Options struct {
	// Serial receives the guest's COM1 output; nil discards it.
	Serial io.Writer
	// Logger receives structured logs; nil uses slog.Default().
	Logger *slog.Logger
}

// VM is a virtual machine. Its methods are safe for concurrent use.
type VM struct {
	cfg    Config
	log    *slog.Logger
	serial io.Writer
	kvm    *os.File

	// opMu serialises host-side transitions (pause, resume, wake, reset).
	opMu sync.Mutex

	mu      sync.Mutex
	state   State
	m       *machine
	started time.Time
	// suspendedAt is when the guest last entered S3.
	suspendedAt time.Time
	suspends    uint64 // S3 entries, so a --wake-after timer knows its sleep
	result      *Result
	reboots     uint64
	done        chan struct{}
	events      eventBus
	// net is the host side of the network interfaces (net.go): opened by
	// New, kept across reboots, removed when the VM ends.
	net *netHost
}

// event is something that ends or restarts the current machine.
type event struct {
	result *Result // final result, or nil for a reboot
	reboot bool
}

// New validates cfg, checks it against what KVM allows on this host, and
// builds the VM. Nothing runs until Start.
func New(cfg Config, opts Options) (*VM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	serial := opts.Serial
	if serial == nil {
		serial = io.Discard
	}
	f, err := os.OpenFile(cfg.KVMDevice, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open KVM device: %w (is the kvm module loaded and do you have access?)", err)
	}
	vm := &VM{cfg: cfg, log: log, serial: serial, kvm: f, state: StateCreated,
		done: make(chan struct{})}
	if err := vm.checkHost(); err != nil {
		f.Close()
		return nil, err
	}
	if vm.net, err = openNetHost(cfg, log); err != nil {
		f.Close()
		return nil, err
	}
	m, err := newMachine(cfg, f.Fd(), serial, vm, log)
	if err != nil {
		f.Close()
		vm.net.close() // a failed start leaves no tap behind
		return nil, err
	}
	vm.m = m
	return vm, nil
}

// checkHost refuses configs this host's KVM cannot run, before any VM exists.
func (vm *VM) checkHost() error {
	fd := vm.kvm.Fd()
	for _, c := range []struct {
		cap  uint32
		name string
	}{{kvmext.CapIRQChip, "in-kernel irqchip"}, {kvmext.CapImmediateExit, "immediate_exit"}} {
		if n, err := kvmext.CheckExtension(fd, c.cap); err != nil || n == 0 {
			return fmt.Errorf("host KVM lacks %s (capability %d)", c.name, c.cap)
		}
	}
	max, err := kvmext.CheckExtension(fd, kvmext.CapMaxVCPUs)
	if err != nil || max == 0 {
		max, _ = kvmext.CheckExtension(fd, kvmext.CapNrVCPUs)
	}
	if max > 0 && vm.cfg.CPUs > max {
		return fmt.Errorf("cpus %d: this host's KVM allows at most %d", vm.cfg.CPUs, max)
	}
	return nil
}

// Config returns the VM's configuration.
func (vm *VM) Config() Config { return vm.cfg }

// State returns the current lifecycle state.
func (vm *VM) State() State {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.state
}

// Uptime is the time since Start, or zero before it.
func (vm *VM) Uptime() time.Duration {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.started.IsZero() {
		return 0
	}
	return time.Since(vm.started)
}

// Start runs the vCPUs. It returns at once; Wait gives the result.
func (vm *VM) Start() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.state != StateCreated {
		return fmt.Errorf("start: %w: VM is %s", ErrState, vm.state)
	}
	vm.state, vm.started = StateRunning, time.Now()
	vm.events.publish(Event{Type: "state", State: StateRunning})
	go vm.supervise()
	return nil
}

// Run starts the VM and waits for it to end; cancelling ctx stops it.
func (vm *VM) Run(ctx context.Context) (Result, error) {
	if err := vm.Start(); err != nil {
		return Result{}, err
	}
	return vm.Wait(ctx)
}

// Wait blocks until the VM ends. If ctx ends first, the VM is stopped and
// Wait returns its result with ctx's error.
func (vm *VM) Wait(ctx context.Context) (Result, error) {
	select {
	case <-vm.done:
		return *vm.result, nil
	case <-ctx.Done():
		vm.Stop("context cancelled")
		<-vm.done
		return *vm.result, ctx.Err()
	}
}

// Result returns how the VM ended; false while it has not.
func (vm *VM) Result() (Result, bool) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.result == nil {
		return Result{}, false
	}
	return *vm.result, true
}

// Done is closed when the VM has ended.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// supervise runs machines until one ends the VM; a guest reboot replaces the
// machine with a fresh one built from the same config.
func (vm *VM) supervise() {
	for {
		vm.mu.Lock()
		m := vm.m
		vm.mu.Unlock()
		ev := vm.runMachine(m)
		m.close()
		if !ev.reboot {
			vm.finish(*ev.result)
			return
		}
		vm.log.Info("guest reboot: building a new machine")
		nm, err := newMachine(vm.cfg, vm.kvm.Fd(), vm.serial, vm, vm.log)
		if err != nil {
			vm.finish(Result{Status: StatusVMMError, Reason: fmt.Sprintf("reboot: %v", err)})
			return
		}
		vm.mu.Lock()
		vm.m = nm
		vm.reboots++
		vm.mu.Unlock()
		vm.events.publish(Event{Type: "guest-reboot", Detail: "machine rebuilt after a guest reset"})
	}
}

// runMachine runs every vCPU of m until an event ends the machine.
func (vm *VM) runMachine(m *machine) event {
	var wg sync.WaitGroup
	for _, v := range m.vcpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := v.Run(m); err != nil {
				m.post(vm.eventForStop(err))
			}
		}()
	}
	ev := <-m.events
	for _, v := range m.vcpus {
		v.Stop()
	}
	wg.Wait()
	return ev
}

// eventForStop maps a vCPU's end to a VM event.
func (vm *VM) eventForStop(err error) event {
	var se *vcpu.StopError
	if !errors.As(err, &se) {
		vm.log.Error("vcpu failed", "err", err)
		return event{result: &Result{Status: StatusVMMError, Reason: err.Error()}}
	}
	switch se.Kind {
	case vcpu.StopSystemShutdown:
		return event{result: &Result{Status: StatusPowerOff, Reason: "guest powered off"}}
	case vcpu.StopSystemReset:
		return vm.resetEvent("KVM system reset event")
	case vcpu.StopSystemCrash:
		// KVM's own guest-crash report (an in-kernel Hyper-V crash MSR
		// write on hosts that cannot route it to kvmm).
		vm.events.publish(Event{Type: "guest-crashed", Detail: se.Error()})
		return event{result: &Result{Status: StatusGuestCrashed, Reason: "guest crashed: " + se.Error()}}
	case vcpu.StopTripleFault:
		vm.log.Warn("guest triple fault", "detail", se.Detail)
		if vm.cfg.OnReboot == OnRebootReboot {
			return event{reboot: true}
		}
		return event{result: &Result{Status: StatusTripleFault, Reason: se.Error()}}
	default:
		vm.log.Error("guest stopped", "err", se)
		return event{result: &Result{Status: StatusInternalError, Reason: se.Error()}}
	}
}

func (vm *VM) resetEvent(why string) event {
	if vm.cfg.OnReboot == OnRebootReboot {
		vm.log.Info("guest reset", "source", why)
		return event{reboot: true}
	}
	return event{result: &Result{Status: StatusPowerOff, Reason: "guest reset (" + why + ") with on-reboot=exit"}}
}

func (vm *VM) finish(r Result) {
	vm.mu.Lock()
	vm.state, vm.result = StateStopped, &r
	vm.mu.Unlock()
	vm.kvm.Close()
	// Every way a VM ends comes here (the machine, and with it every
	// device on the taps, is closed by now): remove the host's network
	// interfaces before anyone waiting on done, such as the CLI's signal
	// path, lets the process exit.
	vm.net.close()
	vm.log.Info("VM stopped", "status", r.Status, "reason", r.Reason)
	status := r.Status
	vm.events.publish(Event{Type: "state", State: StateStopped, Detail: r.Reason, Status: &status})
	vm.events.close()
	close(vm.done)
}

// powerSink implements devices.PowerEvents for one machine's devices. Its
// methods run on a vCPU thread and only post an event to that machine, so a
// late event from a machine being torn down cannot reach its successor.
type powerSink struct {
	vm *VM
	m  *machine
}

func (p powerSink) PowerOff() {
	p.m.post(event{result: &Result{Status: StatusPowerOff, Reason: "guest powered off (ACPI S5)"}})
}

func (p powerSink) Reset(reason string) { p.m.post(p.vm.resetEvent(reason)) }

func (p powerSink) DebugExit(status int) {
	p.m.post(event{result: &Result{Status: status, Reason: fmt.Sprintf("guest wrote to the debug-exit port (status %d)", status)}})
}

// Stop ends the VM from the host side (a hard stop, not a guest shutdown).
func (vm *VM) Stop(reason string) {
	r := &Result{Status: StatusStopped, Reason: "stopped by host: " + reason}
	vm.mu.Lock()
	if vm.state == StateCreated {
		vm.mu.Unlock()
		vm.m.close()
		vm.finish(*r)
		return
	}
	m := vm.m
	vm.mu.Unlock()
	// Parked vCPUs of a paused machine are woken by runMachine's Stop.
	m.post(event{result: r})
}

// Pause parks every vCPU outside KVM_RUN; a paused VM uses no CPU time.
// Transitions are serialised by opMu; vm.mu is only held for short reads and
// writes of the state, because a vCPU that is being parked may need it (a
// guest entering S3 at that moment).
func (vm *VM) Pause() (time.Duration, error) {
	vm.opMu.Lock()
	defer vm.opMu.Unlock()
	vm.mu.Lock()
	if vm.state != StateRunning {
		defer vm.mu.Unlock()
		return 0, fmt.Errorf("pause: %w: VM is %s, not running", ErrState, vm.state)
	}
	m := vm.m
	vm.mu.Unlock()
	start := time.Now()
	m.parkAll()
	d := time.Since(start)
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.state != StateRunning {
		// The guest suspended (S3) while we parked it: it stays parked,
		// and suspended is the state it is in.
		return d, fmt.Errorf("pause: %w: the guest entered %s meanwhile", ErrState, vm.state)
	}
	vm.state = StatePaused
	vm.log.Info("VM paused", "took", d)
	vm.events.publish(Event{Type: "state", State: StatePaused, Detail: "pause took " + d.String()})
	return d, nil
}

// Resume lets a paused VM run again.
func (vm *VM) Resume() (time.Duration, error) {
	vm.opMu.Lock()
	defer vm.opMu.Unlock()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.state != StatePaused {
		return 0, fmt.Errorf("resume: %w: VM is %s, not paused", ErrState, vm.state)
	}
	start := time.Now()
	vm.m.resumeAll()
	vm.state = StateRunning
	d := time.Since(start)
	vm.log.Info("VM resumed", "took", d)
	vm.events.publish(Event{Type: "state", State: StateRunning, Detail: "resume took " + d.String()})
	return d, nil
}

// SendInput queues bytes for the guest's console: the serial port, or
// virtio-console with Config.Console "virtio". It returns how many were
// accepted; the rest should be retried when the guest has read some.
func (vm *VM) SendInput(b []byte) int {
	vm.mu.Lock()
	m := vm.m
	vm.mu.Unlock()
	if m == nil {
		return 0
	}
	return m.sendInput(b)
}

// Subscribe returns a stream of events from now on, and a function that ends
// the subscription. The channel is closed after the VM stops.
func (vm *VM) Subscribe() (<-chan Event, func()) { return vm.events.subscribe() }

// PowerButton presses the ACPI power button: an SCI with PWRBTN_STS, which a
// guest with an ACPI button driver turns into a clean poweroff.
func (vm *VM) PowerButton() error {
	vm.mu.Lock()
	state := vm.state
	if state == StateRunning {
		vm.m.pm.PressPowerButton()
	}
	vm.mu.Unlock()
	switch state {
	case StateRunning:
		vm.events.publish(Event{Type: "power-button"})
		return nil
	case StateSuspended:
		// A power button press wakes a sleeping machine.
		return vm.wake(acpi.WakeOther, "power button")
	}
	return fmt.Errorf("power button: %w: VM is %s", ErrState, state)
}

// HostReset reboots the guest (a hardware reset, not a guest request), even
// when OnReboot is "exit".
func (vm *VM) HostReset() error {
	vm.opMu.Lock()
	defer vm.opMu.Unlock()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	switch vm.state {
	case StateRunning, StatePaused, StateSuspended:
	default:
		return fmt.Errorf("reset: %w: VM is %s", ErrState, vm.state)
	}
	if vm.state != StateRunning {
		vm.events.publish(Event{Type: "state", State: StateRunning, Detail: "reset of a " + string(vm.state) + " VM"})
		vm.state = StateRunning
	}
	vm.m.post(event{reboot: true})
	return nil
}
