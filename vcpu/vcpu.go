// Package vcpu runs one virtual CPU: creation, CPUID composition, boot
// register states, the KVM_RUN loop on a locked OS thread, and the kick that
// pulls a vCPU out of KVM_RUN for pause and stop. Device semantics are not
// here: exits are handed to a Handler.
package vcpu

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/kvmext"
)

// hvStatusInvalidHypercallCode is HV_STATUS_INVALID_HYPERCALL_CODE.
const hvStatusInvalidHypercallCode = 2

// kickSignal interrupts KVM_RUN. Go's runtime already sends SIGURG to its own
// threads for preemption and every Go program tolerates spurious ones, so it
// costs nothing to install and clashes with no application handler.
const kickSignal = unix.SIGURG

// Handler answers the exits a vCPU cannot finish inside KVM. Calls are made
// on the vCPU's thread, concurrently with other vCPUs' calls. For a read,
// the handler fills data. v is the exiting vCPU, for the few devices whose
// protocol passes values in registers (the VMware backdoor).
type Handler interface {
	PIO(v *VCPU, port uint16, data []byte, write bool)
	MMIO(v *VCPU, addr uint64, data []byte, write bool)
}

// MSRHandler is implemented by a Handler that serves the MSR accesses KVM
// forwards to user space (KVM_CAP_X86_USER_SPACE_MSR). ok=false makes KVM
// inject #GP into the guest, as hardware does for a bad MSR access.
type MSRHandler interface {
	ReadMSR(v *VCPU, index uint32) (value uint64, ok bool)
	WriteMSR(v *VCPU, index uint32, value uint64) (ok bool)
}

// StopKind says why the guest stopped a vCPU for good.
type StopKind int

const (
	StopTripleFault StopKind = iota + 1
	StopSystemShutdown
	StopSystemReset
	StopSystemCrash
	StopInternalError
	StopFailEntry
	StopUnexpectedExit
)

func (k StopKind) String() string {
	switch k {
	case StopTripleFault:
		return "triple fault"
	case StopSystemShutdown:
		return "system shutdown event"
	case StopSystemReset:
		return "system reset event"
	case StopSystemCrash:
		return "system crash event"
	case StopInternalError:
		return "KVM internal error"
	case StopFailEntry:
		return "VM entry failure"
	case StopUnexpectedExit:
		return "unexpected exit"
	}
	return fmt.Sprintf("stop(%d)", int(k))
}

// StopError is returned by Run when the guest ended the vCPU's execution.
type StopError struct {
	VCPU   int
	Kind   StopKind
	Detail string // diagnosis and register dump
}

func (e *StopError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("vcpu %d: %s", e.VCPU, e.Kind)
	}
	return fmt.Sprintf("vcpu %d: %s: %s", e.VCPU, e.Kind, e.Detail)
}

type runState int

const (
	wantRun runState = iota
	wantPause
	wantStop
)

// VCPU is one virtual CPU.
type VCPU struct {
	ID  int
	fd  uintptr
	run *kvmext.Run
	log *slog.Logger

	// ReadGuest reads guest-physical memory for diagnostics (instruction
	// bytes on an emulation failure). Optional.
	ReadGuest func(gpa uint64, b []byte) error

	mu      sync.Mutex
	cond    *sync.Cond
	want    runState
	parked  bool // in the pause gate, not in KVM_RUN
	running bool // the Run loop is active
	tid     int  // OS thread id while running, 0 otherwise

	exits   [kvmext.NumExitReasons]atomic.Uint64
	runNS   atomic.Int64
	pioOps  atomic.Uint64
	mmioOps atomic.Uint64
}

// New creates vCPU id on the VM and maps its kvm_run area.
func New(kvmFd, vmFd uintptr, id int, log *slog.Logger) (*VCPU, error) {
	fd, err := kvm.CreateVCPU(vmFd, id)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	run, err := kvmext.MapRun(kvmFd, fd)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("vcpu %d: %w", id, err)
	}
	v := &VCPU{ID: id, fd: fd, run: run, log: log.With("vcpu", id)}
	v.cond = sync.NewCond(&v.mu)
	return v, nil
}

// FD is the vCPU file descriptor.
func (v *VCPU) FD() uintptr { return v.fd }

// Close releases the vCPU. Run must have returned.
func (v *VCPU) Close() error {
	err := v.run.Close()
	if cerr := unix.Close(int(v.fd)); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// SetCPUID installs the CPUID table.
func (v *VCPU) SetCPUID(entries []kvm.CPUIDEntry2) error {
	c := &kvm.CPUID{Nent: uint32(len(entries)), Entries: entries}
	if err := kvm.SetCPUID2(v.fd, c); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_CPUID2 (%d entries): %w", v.ID, len(entries), err)
	}
	return nil
}

// MSR indices set at boot.
const (
	msrMTRRDefType = 0x2FF
	mtrrEnableWB   = 1<<11 | 6 // MTRRs enabled, default type write-back
)

// SetBootMSRs gives the MSRs the values firmware leaves: MTRRs enabled with
// write-back default, so Linux does not run with caching disabled.
func (v *VCPU) SetBootMSRs() error {
	m := &kvm.MSRS{NMSRs: 1, Entries: []kvm.MSREntry{{Index: msrMTRRDefType, Data: mtrrEnableWB}}}
	if err := kvm.SetMSRs(v.fd, m); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_MSRS: %w", v.ID, err)
	}
	return nil
}

// LAPIC register offsets and LVT delivery modes.
const (
	lapicLVTLINT0 = 0x350
	lapicLVTLINT1 = 0x360
	lvtModeExtINT = 0x7 << 8
	lvtModeNMI    = 0x4 << 8
)

// SetupLAPIC wires LINT0 to ExtINT (the PIC) and LINT1 to NMI, as PC
// firmware does before handing over.
func (v *VCPU) SetupLAPIC() error {
	var st kvm.LAPICState
	if err := kvm.GetLocalAPIC(v.fd, &st); err != nil {
		return fmt.Errorf("vcpu %d: KVM_GET_LAPIC: %w", v.ID, err)
	}
	put := func(off int, val uint32) {
		st.Regs[off], st.Regs[off+1], st.Regs[off+2], st.Regs[off+3] = byte(val), byte(val>>8), byte(val>>16), byte(val>>24)
	}
	get := func(off int) uint32 {
		return uint32(st.Regs[off]) | uint32(st.Regs[off+1])<<8 | uint32(st.Regs[off+2])<<16 | uint32(st.Regs[off+3])<<24
	}
	put(lapicLVTLINT0, get(lapicLVTLINT0)&^0x700|lvtModeExtINT)
	put(lapicLVTLINT1, get(lapicLVTLINT1)&^0x700|lvtModeNMI)
	if err := kvm.SetLocalAPIC(v.fd, &st); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_LAPIC: %w", v.ID, err)
	}
	return nil
}

// Run executes the vCPU until Stop is called (nil) or the guest ends it
// (*StopError) or KVM fails (error). It locks the calling goroutine to its
// OS thread for its whole life: KVM requires the vCPU's ioctls on one
// thread, and the kick signal is sent to that thread.
func (v *VCPU) Run(h Handler) error {
	runtime.LockOSThread()
	// The thread is not unlocked: when this goroutine ends the runtime
	// destroys the thread, so a late kick can never hit a reused thread id.
	v.mu.Lock()
	if v.running {
		v.mu.Unlock()
		return fmt.Errorf("vcpu %d: already running", v.ID)
	}
	v.running, v.tid = true, unix.Gettid()
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		if ns, err := threadCPUTime(v.tid); err == nil {
			v.runNS.Store(int64(ns))
		}
		v.running, v.tid, v.parked = false, 0, false
		v.cond.Broadcast()
		v.mu.Unlock()
	}()

	for {
		v.run.SetImmediateExit(false)
		if !v.gate() {
			return nil
		}
		_, err := kvm.Ioctl(v.fd, kvm.IIO(0x80), 0)
		if err != nil {
			if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN) {
				v.exits[kvmext.ExitIntr].Add(1)
				continue
			}
			return fmt.Errorf("vcpu %d: KVM_RUN: %w", v.ID, err)
		}
		reason := v.run.ExitReason()
		if reason < kvmext.NumExitReasons {
			v.exits[reason].Add(1)
		}
		if err := v.handleExit(reason, h); err != nil {
			return err
		}
	}
}

// gate parks the vCPU while a pause is requested; false means stop.
func (v *VCPU) gate() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for v.want == wantPause {
		if !v.parked {
			v.mu.Unlock()
			v.completePendingExit()
			v.mu.Lock()
			if v.want != wantPause {
				break
			}
			v.parked = true
			v.cond.Broadcast()
		}
		v.cond.Wait()
	}
	v.parked = false
	return v.want != wantStop
}

// completePendingExit finishes the instruction whose exit was just handled
// (an IN's data into RAX, an emulated OUT's RIP advance) with a KVM_RUN that
// returns at once (immediate_exit), as KVM's API documentation prescribes
// before the VMM reads or replaces vCPU state. Without it, state set while
// parked (the real-mode reset of an S3 wake) would be overwritten by the
// completion of the OUT that entered S3 on the next KVM_RUN.
func (v *VCPU) completePendingExit() {
	v.run.SetImmediateExit(true)
	_, err := kvm.Ioctl(v.fd, kvm.IIO(0x80), 0)
	v.run.SetImmediateExit(false)
	if err != nil && !errors.Is(err, syscall.EINTR) && !errors.Is(err, syscall.EAGAIN) {
		v.log.Warn("completing the pending exit before parking", "err", err)
	}
}

func (v *VCPU) handleExit(reason uint32, h Handler) error {
	switch reason {
	case kvmext.ExitIO:
		dir, size, port, count, data, err := v.run.IO()
		if err != nil {
			return &StopError{VCPU: v.ID, Kind: StopUnexpectedExit, Detail: err.Error()}
		}
		for i := uint32(0); i < count; i++ {
			v.pioOps.Add(1)
			h.PIO(v, port, data[uint32(size)*i:uint32(size)*(i+1)], dir == kvmext.IOOut)
		}
	case kvmext.ExitMMIO:
		addr, data, write := v.run.MMIO()
		v.mmioOps.Add(1)
		h.MMIO(v, addr, data, write)
	case kvmext.ExitX86RDMSR, kvmext.ExitX86WRMSR:
		index, data := v.run.MSR()
		mh, _ := h.(MSRHandler)
		ok := false
		if reason == kvmext.ExitX86RDMSR {
			if mh != nil {
				data, ok = mh.ReadMSR(v, index)
			}
		} else if mh != nil {
			ok = mh.WriteMSR(v, index, data)
		}
		v.run.CompleteMSR(data, !ok)
	case kvmext.ExitHyperV:
		// Only an in-kernel Hyper-V (the kernel backend) exits here: a SynIC
		// MSR change is informational (kvmm has no VMBus to re-wire), and a
		// hypercall KVM leaves to user space is one kvmm does not offer.
		if v.run.HyperVExit() == kvmext.HyperVExitHcall {
			v.run.SetHypercallResult(hvStatusInvalidHypercallCode)
		}
	case kvmext.ExitIntr, kvmext.ExitHLT, kvmext.ExitIRQWindowOpen:
		// Nothing to do: the loop re-checks the pause gate.
	case kvmext.ExitShutdown:
		return &StopError{VCPU: v.ID, Kind: StopTripleFault, Detail: v.dumpRegs()}
	case kvmext.ExitSystemEvent:
		switch v.run.SystemEvent() {
		case kvmext.SystemEventShutdown:
			return &StopError{VCPU: v.ID, Kind: StopSystemShutdown}
		case kvmext.SystemEventReset:
			return &StopError{VCPU: v.ID, Kind: StopSystemReset}
		default:
			return &StopError{VCPU: v.ID, Kind: StopSystemCrash, Detail: v.dumpRegs()}
		}
	case kvmext.ExitInternalError:
		sub, data := v.run.InternalError()
		return &StopError{VCPU: v.ID, Kind: StopInternalError, Detail: v.diagnoseInternal(sub, data)}
	case kvmext.ExitFailEntry:
		return &StopError{VCPU: v.ID, Kind: StopFailEntry,
			Detail: fmt.Sprintf("hardware entry failure reason %#x; %s", v.run.FailEntryReason(), v.dumpRegs())}
	default:
		return &StopError{VCPU: v.ID, Kind: StopUnexpectedExit,
			Detail: fmt.Sprintf("exit reason %s; %s", kvmext.ExitReasonName(reason), v.dumpRegs())}
	}
	return nil
}

// Regs reads the general-purpose registers. Only the vCPU's own thread (a
// Handler call) may use Regs and SetRegs while the vCPU runs.
func (v *VCPU) Regs() (*kvm.Regs, error) {
	r, err := kvm.GetRegs(v.fd)
	if err != nil {
		return nil, fmt.Errorf("vcpu %d: KVM_GET_REGS: %w", v.ID, err)
	}
	return r, nil
}

// SetRegs writes the general-purpose registers.
func (v *VCPU) SetRegs(r *kvm.Regs) error {
	if err := kvm.SetRegs(v.fd, r); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_REGS: %w", v.ID, err)
	}
	return nil
}

// kick makes a vCPU inside KVM_RUN return to user space. Caller holds v.mu.
func (v *VCPU) kick() {
	if !v.running || v.tid == 0 {
		return
	}
	v.run.SetImmediateExit(true)
	if err := unix.Tgkill(unix.Getpid(), v.tid, kickSignal); err != nil {
		v.log.Warn("kick failed", "err", err)
	}
}

// RequestPause asks the vCPU to leave KVM_RUN and park; WaitParked waits.
func (v *VCPU) RequestPause() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.want == wantStop {
		return
	}
	v.want = wantPause
	v.kick()
}

// WaitParked blocks until the vCPU is parked or not running.
func (v *VCPU) WaitParked() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for v.running && !v.parked && v.want == wantPause {
		v.cond.Wait()
	}
}

// Resume lets a paused vCPU run again.
func (v *VCPU) Resume() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.want == wantPause {
		v.want = wantRun
		v.cond.Broadcast()
	}
}

// Stop makes Run return nil as soon as possible. It does not wait.
func (v *VCPU) Stop() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.want = wantStop
	v.cond.Broadcast()
	v.kick()
}

// Stats is a snapshot of the vCPU's counters.
type Stats struct {
	Exits map[string]uint64 `json:"exits"`
	// RunTime is the CPU time of the vCPU's thread: inside KVM_RUN (the
	// guest) and in kvmm's exit handlers; a parked vCPU adds nothing.
	RunTime time.Duration `json:"run_time_ns"`
	PIOOps  uint64        `json:"pio_ops"`
	MMIOOps uint64        `json:"mmio_ops"`
}

// Stats reads the counters.
func (v *VCPU) Stats() Stats {
	run := time.Duration(v.runNS.Load())
	v.mu.Lock()
	if v.running {
		if ns, err := threadCPUTime(v.tid); err == nil {
			run = time.Duration(ns)
		}
	}
	v.mu.Unlock()
	s := Stats{Exits: map[string]uint64{}, RunTime: run,
		PIOOps: v.pioOps.Load(), MMIOOps: v.mmioOps.Load()}
	for i := range v.exits {
		if n := v.exits[i].Load(); n != 0 {
			s.Exits[kvmext.ExitReasonName(uint32(i))] = n
		}
	}
	return s
}

// threadCPUTime is the CPU time in nanoseconds of one of this process's
// threads, from the scheduler's own accounting (/proc/self/task/TID/schedstat,
// first field). Reading it when asked, instead of timing every KVM_RUN with
// two clock reads, keeps the exit path free of the ~140 ns they cost.
func threadCPUTime(tid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", tid))
	if err != nil {
		return 0, fmt.Errorf("vcpu thread %d cpu time: %w", tid, err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("vcpu thread %d cpu time: empty schedstat", tid)
	}
	ns, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("vcpu thread %d cpu time: %w", tid, err)
	}
	return ns, nil
}
