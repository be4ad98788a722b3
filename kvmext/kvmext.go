// Package kvmext is the one place for the KVM ioctls and kvm_run fields that
// github.com/bobuhiro11/gokvm/kvm lacks or gets wrong for us: the kvm_run
// shared page as a byte slice with typed accessors, KVM_ENABLE_CAP, KVM_IRQ_LINE,
// MP state, KVM_SIGNAL_MSI, ioeventfd and irqfd. Everything else uses gokvm.
// Struct layouts follow include/uapi/linux/kvm.h for x86-64.
package kvmext

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"
)

// Exit reasons (KVM_EXIT_*) that kvmm handles or names.
const (
	ExitUnknown       = 0
	ExitException     = 1
	ExitIO            = 2
	ExitHypercall     = 3
	ExitDebug         = 4
	ExitHLT           = 5
	ExitMMIO          = 6
	ExitIRQWindowOpen = 7
	ExitShutdown      = 8
	ExitFailEntry     = 9
	ExitIntr          = 10
	ExitNMI           = 16
	ExitInternalError = 17
	ExitSystemEvent   = 24
	ExitHyperV        = 27
	ExitX86RDMSR      = 29
	ExitX86WRMSR      = 30
	// NumExitReasons bounds the per-reason counters.
	NumExitReasons = 64
)

// ExitReasonName names a KVM exit reason for logs and metrics.
func ExitReasonName(r uint32) string {
	switch r {
	case ExitUnknown:
		return "unknown"
	case ExitException:
		return "exception"
	case ExitIO:
		return "io"
	case ExitHypercall:
		return "hypercall"
	case ExitDebug:
		return "debug"
	case ExitHLT:
		return "hlt"
	case ExitMMIO:
		return "mmio"
	case ExitIRQWindowOpen:
		return "irq_window_open"
	case ExitShutdown:
		return "shutdown"
	case ExitFailEntry:
		return "fail_entry"
	case ExitIntr:
		return "intr"
	case ExitNMI:
		return "nmi"
	case ExitInternalError:
		return "internal_error"
	case ExitSystemEvent:
		return "system_event"
	case ExitHyperV:
		return "hyperv"
	case ExitX86RDMSR:
		return "x86_rdmsr"
	case ExitX86WRMSR:
		return "x86_wrmsr"
	}
	return fmt.Sprintf("reason_%d", r)
}

// Internal error sub-reasons (KVM_INTERNAL_ERROR_*).
const (
	InternalErrorEmulation     = 1
	InternalErrorSimulEx       = 2
	InternalErrorDeliveryEv    = 3
	InternalErrorUnexpectedExR = 4
)

// System event types (KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// I/O directions in kvm_run.io.
const (
	IOIn  = 0
	IOOut = 1
)

// Offsets into struct kvm_run (x86-64).
const (
	runImmediateExit = 1
	runExitReason    = 8
	runUnion         = 32
	minRunSize       = runUnion + 256
)

// Run is a vCPU's mmap'ed struct kvm_run.
type Run struct {
	b []byte
}

// MapRun maps the kvm_run area of a vCPU fd.
func MapRun(kvmFd, vcpuFd uintptr) (*Run, error) {
	size, err := kvm.GetVCPUMMmapSize(kvmFd)
	if err != nil {
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	if size < minRunSize {
		return nil, fmt.Errorf("kvm_run area of %d bytes is smaller than %d", size, minRunSize)
	}
	b, err := unix.Mmap(int(vcpuFd), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap kvm_run: %w", err)
	}
	return &Run{b: b}, nil
}

// Close unmaps the area.
func (r *Run) Close() error {
	if r.b == nil {
		return nil
	}
	err := unix.Munmap(r.b)
	r.b = nil
	return err
}

// ExitReason is kvm_run.exit_reason.
func (r *Run) ExitReason() uint32 {
	return binary.LittleEndian.Uint32(r.b[runExitReason:])
}

// SetImmediateExit sets kvm_run.immediate_exit: KVM_RUN returns EINTR at once
// while it is 1, which closes the race of a kick that arrives just before the
// vCPU thread enters KVM_RUN.
func (r *Run) SetImmediateExit(on bool) {
	v := byte(0)
	if on {
		v = 1
	}
	// The byte is read by the kernel on entry to KVM_RUN; a plain store is
	// what every VMM does, ordered by the tgkill syscall that follows it.
	*(*byte)(unsafe.Pointer(&r.b[runImmediateExit])) = v
}

// IO describes a KVM_EXIT_IO: direction, access size, port, repeat count,
// and the data bytes (size*count of them) inside the kvm_run area.
func (r *Run) IO() (dir uint8, size uint8, port uint16, count uint32, data []byte, err error) {
	u := r.b[runUnion:]
	dir, size = u[0], u[1]
	port = binary.LittleEndian.Uint16(u[2:])
	count = binary.LittleEndian.Uint32(u[4:])
	off := binary.LittleEndian.Uint64(u[8:])
	n := uint64(size) * uint64(count)
	if off > uint64(len(r.b)) || n > uint64(len(r.b))-off {
		return 0, 0, 0, 0, nil, fmt.Errorf("kvm_run io data [%d, +%d) outside the %d-byte area", off, n, len(r.b))
	}
	return dir, size, port, count, r.b[off : off+n], nil
}

// MMIO describes a KVM_EXIT_MMIO: address, data (len bytes, at most 8) and
// whether it is a write.
func (r *Run) MMIO() (addr uint64, data []byte, isWrite bool) {
	u := r.b[runUnion:]
	addr = binary.LittleEndian.Uint64(u[0:])
	n := binary.LittleEndian.Uint32(u[16:])
	if n > 8 {
		n = 8
	}
	return addr, u[8 : 8+n], u[20] != 0
}

// InternalError returns kvm_run.internal: the suberror and its data words.
func (r *Run) InternalError() (suberror uint32, data []uint64) {
	u := r.b[runUnion:]
	suberror = binary.LittleEndian.Uint32(u[0:])
	n := min(binary.LittleEndian.Uint32(u[4:]), 16)
	for i := uint32(0); i < n; i++ {
		data = append(data, binary.LittleEndian.Uint64(u[8+8*i:]))
	}
	return suberror, data
}

// SystemEvent returns kvm_run.system_event.type.
func (r *Run) SystemEvent() uint32 {
	return binary.LittleEndian.Uint32(r.b[runUnion:])
}

// FailEntryReason returns kvm_run.fail_entry.hardware_entry_failure_reason.
func (r *Run) FailEntryReason() uint64 {
	return binary.LittleEndian.Uint64(r.b[runUnion:])
}

// KVM_EXIT_HYPERV types (struct kvm_hyperv_exit).
const (
	HyperVExitSynIC  = 1
	HyperVExitHcall  = 2
	HyperVExitSynDbg = 3
)

// HyperVExit returns kvm_run.hyperv.type.
func (r *Run) HyperVExit() uint32 {
	return binary.LittleEndian.Uint32(r.b[runUnion:])
}

// SetHypercallResult answers a KVM_EXIT_HYPERV of type HCALL: the status
// the guest's hypercall returns (kvm_hyperv_exit.u.hcall.result).
func (r *Run) SetHypercallResult(status uint64) {
	binary.LittleEndian.PutUint64(r.b[runUnion+16:], status)
}

// MSR returns kvm_run.msr for KVM_EXIT_X86_RDMSR/WRMSR: index and data.
func (r *Run) MSR() (index uint32, data uint64) {
	u := r.b[runUnion:]
	return binary.LittleEndian.Uint32(u[12:]), binary.LittleEndian.Uint64(u[16:])
}

// CompleteMSR answers an MSR exit: data for a read, and error=true to make
// KVM inject #GP into the guest.
func (r *Run) CompleteMSR(data uint64, fault bool) {
	u := r.b[runUnion:]
	u[0] = 0
	if fault {
		u[0] = 1
	}
	binary.LittleEndian.PutUint64(u[16:], data)
}

func ioc(dir, nr, size uintptr) uintptr { return kvm.IIOC(dir, nr, size) }

const (
	iocWrite = 1
	iocRead  = 2
)

// EnableCap issues KVM_ENABLE_CAP on a VM or vCPU fd.
func EnableCap(fd uintptr, capability uint32, args ...uint64) error {
	var ec struct {
		Cap   uint32
		Flags uint32
		Args  [4]uint64
		Pad   [64]uint8
	}
	if len(args) > len(ec.Args) {
		return fmt.Errorf("KVM_ENABLE_CAP %d: %d args, at most 4", capability, len(args))
	}
	ec.Cap = capability
	copy(ec.Args[:], args)
	if _, err := kvm.Ioctl(fd, ioc(iocWrite, 0xa3, unsafe.Sizeof(ec)), uintptr(unsafe.Pointer(&ec))); err != nil {
		return fmt.Errorf("KVM_ENABLE_CAP %d: %w", capability, err)
	}
	return nil
}

// CheckExtension asks KVM (system or VM fd) about a capability.
func CheckExtension(fd uintptr, capability uint32) (int, error) {
	r, err := kvm.Ioctl(fd, kvm.IIO(0x03), uintptr(capability))
	if err != nil {
		return 0, fmt.Errorf("KVM_CHECK_EXTENSION %d: %w", capability, err)
	}
	return int(r), nil
}

// Capabilities kvmm asks about.
const (
	CapIRQChip         = 0
	CapNrVCPUs         = 9
	CapMaxVCPUs        = 66
	CapImmediateExit   = 136
	CapX86UserSpaceMSR = 188
	CapX86MSRFilter    = 189
	CapHyperV          = 44
	CapIOEventFD       = 36
	CapIRQFD           = 32
	CapSignalMSI       = 77
	CapMaxVCPUID       = 128
)

// IRQLine sets the level of an in-kernel irqchip input (KVM_IRQ_LINE).
func IRQLine(vmFd uintptr, gsi uint32, level bool) error {
	var l struct{ IRQ, Level uint32 }
	l.IRQ = gsi
	if level {
		l.Level = 1
	}
	if _, err := kvm.Ioctl(vmFd, ioc(iocWrite, 0x61, unsafe.Sizeof(l)), uintptr(unsafe.Pointer(&l))); err != nil {
		return fmt.Errorf("KVM_IRQ_LINE gsi %d level %v: %w", gsi, level, err)
	}
	return nil
}

// SignalMSI injects one MSI (KVM_SIGNAL_MSI).
func SignalMSI(vmFd uintptr, addr uint64, data uint32) error {
	var m struct {
		AddrLo, AddrHi, Data, Flags, DevID uint32
		Pad                                [12]uint8
	}
	m.AddrLo, m.AddrHi, m.Data = uint32(addr), uint32(addr>>32), data
	if _, err := kvm.Ioctl(vmFd, ioc(iocWrite, 0xa5, unsafe.Sizeof(m)), uintptr(unsafe.Pointer(&m))); err != nil {
		return fmt.Errorf("KVM_SIGNAL_MSI %#x/%#x: %w", addr, data, err)
	}
	return nil
}

// MP states (KVM_MP_STATE_*).
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateInitReceived  = 2
	MPStateHalted        = 3
	MPStateSIPIReceived  = 4
)

// SetMPState sets a vCPU's multiprocessing state.
func SetMPState(vcpuFd uintptr, state uint32) error {
	if err := kvm.SetMPState(vcpuFd, &kvm.MPState{State: state}); err != nil {
		return fmt.Errorf("KVM_SET_MP_STATE %d: %w", state, err)
	}
	return nil
}

// GetMPState reads a vCPU's multiprocessing state.
func GetMPState(vcpuFd uintptr) (uint32, error) {
	var s kvm.MPState
	if err := kvm.GetMPState(vcpuFd, &s); err != nil {
		return 0, fmt.Errorf("KVM_GET_MP_STATE: %w", err)
	}
	return s.State, nil
}

// ioeventfd flags.
const (
	IOEventFDDatamatch = 1 << 0
	IOEventFDPIO       = 1 << 1
	IOEventFDDeassign  = 1 << 2
)

// IOEventFD registers (or with IOEventFDDeassign removes) an eventfd that KVM
// signals on a guest write to addr (KVM_IOEVENTFD).
func IOEventFD(vmFd uintptr, addr uint64, length uint32, fd int, flags uint32, datamatch uint64) error {
	var e struct {
		Datamatch uint64
		Addr      uint64
		Len       uint32
		FD        int32
		Flags     uint32
		Pad       [36]uint8
	}
	e.Datamatch, e.Addr, e.Len, e.FD, e.Flags = datamatch, addr, length, int32(fd), flags
	if _, err := kvm.Ioctl(vmFd, ioc(iocWrite, 0x79, unsafe.Sizeof(e)), uintptr(unsafe.Pointer(&e))); err != nil {
		return fmt.Errorf("KVM_IOEVENTFD addr %#x len %d: %w", addr, length, err)
	}
	return nil
}

// irqfd flags.
const (
	IRQFDDeassign = 1 << 0
	IRQFDResample = 1 << 1
)

// IRQFD binds an eventfd to a GSI (KVM_IRQFD): a write to fd raises the GSI.
func IRQFD(vmFd uintptr, fd int, gsi uint32, flags uint32, resampleFD int) error {
	var f struct {
		FD, GSI, Flags, ResampleFD uint32
		Pad                        [16]uint8
	}
	f.FD, f.GSI, f.Flags, f.ResampleFD = uint32(fd), gsi, flags, uint32(resampleFD)
	if _, err := kvm.Ioctl(vmFd, ioc(iocWrite, 0x76, unsafe.Sizeof(f)), uintptr(unsafe.Pointer(&f))); err != nil {
		return fmt.Errorf("KVM_IRQFD fd %d gsi %d: %w", fd, gsi, err)
	}
	return nil
}
