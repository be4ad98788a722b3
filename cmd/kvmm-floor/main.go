// Command kvmm-floor is the lower bound the benchmarks compare kvmm with: the
// least a Go program must do to boot a PVH test guest on /dev/kvm and answer
// its exits. It opens /dev/kvm, creates a VM with one memory slot and one
// vCPU, places the guest with vmm/loader (so the image and hvm_start_info
// are exactly what kvmm gives), sets the 32-bit PVH entry registers and
// calls KVM_RUN in a loop on one locked OS thread. No irqchip, no devices,
// no bus, no goroutines of its own. Exits are answered inline:
//
//   - OUT to 0xF4 (isa-debug-exit): exit with status (value << 1) | 1
//   - OUT to 0x3F8 (COM1 THR): discarded, or with -serial written to
//     standard output (one write per byte, as kvmm does)
//   - OUT to 0x3F9-0x3FF and to anything else, e.g. 0x80: ignored
//   - IN from 0x3FD (COM1 LSR): 0x60 (transmitter empty); other INs: 0xFF
//   - MMIO writes: ignored; MMIO reads: all ones
//   - HLT: the guest is idle; the floor prints "kvmm-floor: guest halted" on its standard
//     output and waits for a signal (the memory benchmark reads its RSS
//     and kills it)
//
// With -ioeventfd-port P an eventfd is bound to 1-byte writes to port P
// (KVM_IOEVENTFD), so those writes complete inside KVM without an exit to
// user space: the floor of an ioeventfd-backed doorbell.
//
// Usage: kvmm-floor -kernel guest.elf [-mem 128M] [-cmdline "..."] [-serial]
//
//	[-ioeventfd-port P]
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/kvmext"
	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/memory"
	"github.com/kvmm/kvmm/vmm/loader"
)

// Ports and values of the guests' conventions (testdata/guests/lib.inc).
const (
	debugExitPort = layout.DebugExitPort
	com1THR       = layout.COM1Port
	com1LSR       = layout.COM1Port + 5
	lsrTxEmpty    = 0x60 // THRE | TEMT
	// haltedLine is printed when the guest halts (bench waits for it).
	haltedLine = "kvmm-floor: guest halted"
	// tssAddr is where KVM may put the TSS Intel VMX needs; the same
	// address kvmm uses (top of the MMIO hole).
	tssAddr = 0xFFFBD000
)

// Exit statuses the way kvmm reports them (vmm.Status*).
const (
	statusUsage         = 2
	statusVMMError      = 1
	statusTripleFault   = 124
	statusInternalError = 125
)

// KVM_RUN on a vCPU must always come from the same thread: KVM notices a
// new thread and pays an RCU grace period for it. main runs on the main
// thread; lock it before anything else runs.
func init() { runtime.LockOSThread() }

func main() {
	os.Exit(run(os.Args[1:]))
}

type options struct {
	kernel  string
	mem     uint64
	cmdline string
	ioePort int
	serial  bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("kvmm-floor", flag.ContinueOnError)
	mem := fs.String("mem", "128M", "guest RAM (one memory slot), e.g. 128M")
	fs.StringVar(&o.kernel, "kernel", "", "PVH ELF guest (required)")
	fs.StringVar(&o.cmdline, "cmdline", "", "guest command line (hvm_start_info.cmdline)")
	fs.IntVar(&o.ioePort, "ioeventfd-port", -1, "bind an eventfd to 1-byte writes to this I/O port")
	fs.BoolVar(&o.serial, "serial", false, "write the guest's COM1 output to standard output instead of discarding it")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.kernel == "" || fs.NArg() != 0 {
		return o, errors.New("usage: kvmm-floor -kernel guest.elf [-mem 128M] [-cmdline ...] [-serial] [-ioeventfd-port P]")
	}
	size, err := parseSize(*mem)
	if err != nil {
		return o, fmt.Errorf("-mem: %w", err)
	}
	o.mem = size
	if o.ioePort > 0xFFFF {
		return o, fmt.Errorf("-ioeventfd-port %d: not an I/O port", o.ioePort)
	}
	return o, nil
}

// parseSize reads "128M", "1G", "65536K" or a byte count.
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult = layout.KiB
	case strings.HasSuffix(s, "M"):
		mult = layout.MiB
	case strings.HasSuffix(s, "G"):
		mult = layout.GiB
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	return n * mult, nil
}

func run(args []string) int {
	o, err := parseFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmm-floor:", err)
		return statusUsage
	}
	status, err := boot(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmm-floor:", err)
	}
	return status
}

// boot builds the VM and runs it; it returns the exit status.
func boot(o options) (int, error) {
	kvmFile, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return statusVMMError, fmt.Errorf("open /dev/kvm: %w", err)
	}
	kvmFd := kvmFile.Fd()
	vmFd, err := kvm.CreateVM(kvmFd)
	if err != nil {
		return statusVMMError, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	if err := kvm.SetTSSAddr(vmFd, tssAddr); err != nil {
		return statusVMMError, fmt.Errorf("KVM_SET_TSS_ADDR: %w", err)
	}
	mem, err := memory.New(o.mem, memory.Options{})
	if err != nil {
		return statusVMMError, fmt.Errorf("guest memory: %w", err)
	}
	regions := mem.Regions()
	if len(regions) != 1 {
		return statusVMMError, fmt.Errorf("-mem %d needs %d memory slots; the floor has one", o.mem, len(regions))
	}
	r := regions[0]
	if err := kvm.SetUserMemoryRegion(vmFd, &kvm.UserspaceMemoryRegion{Slot: 0, GuestPhysAddr: r.GPA,
		MemorySize: r.Size(), UserspaceAddr: uint64(uintptr(unsafe.Pointer(&r.Host()[0])))}); err != nil {
		return statusVMMError, fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	entry, err := load(mem, o)
	if err != nil {
		return statusVMMError, err
	}
	if o.ioePort >= 0 {
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return statusVMMError, fmt.Errorf("eventfd: %w", err)
		}
		if err := kvmext.IOEventFD(vmFd, uint64(o.ioePort), 1, efd, kvmext.IOEventFDPIO, 0); err != nil {
			return statusVMMError, err
		}
	}
	vcpuFd, err := kvm.CreateVCPU(vmFd, 0)
	if err != nil {
		return statusVMMError, fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	runArea, err := kvmext.MapRun(kvmFd, vcpuFd)
	if err != nil {
		return statusVMMError, err
	}
	if err := setPVHRegs(vcpuFd, entry); err != nil {
		return statusVMMError, err
	}
	return loop(vcpuFd, runArea, o.serial)
}

// load places the kernel the way kvmm does (vmm/loader), without ACPI.
func load(mem *memory.Guest, o options) (loader.Entry, error) {
	f, err := os.Open(o.kernel)
	if err != nil {
		return loader.Entry{}, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return loader.Entry{}, fmt.Errorf("kernel: %w", err)
	}
	e, err := loader.Load(mem, loader.Params{Kernel: f, KernelSize: st.Size(), Cmdline: o.cmdline})
	if err != nil {
		return e, fmt.Errorf("load %s: %w", o.kernel, err)
	}
	if e.Mode != loader.ModePVH32 {
		return e, fmt.Errorf("load %s: the floor boots PVH ELF guests only, not %v", o.kernel, e.Mode)
	}
	return e, nil
}

// Selectors of the boot GDT vmm/loader writes (loader.SelectorCode/Data).
const (
	bootCS = 0x10
	bootDS = 0x18
	cr0PE  = 1 << 0
	cr0ET  = 1 << 4
	cr0NE  = 1 << 5
)

// setPVHRegs enters the PVH ABI's state: 32-bit flat protected mode, paging
// off, EBX = hvm_start_info (the state vcpu.SetBootState gives kvmm's boot
// vCPU for a PVH kernel).
func setPVHRegs(vcpuFd uintptr, e loader.Entry) error {
	sregs, err := kvm.GetSregs(vcpuFd)
	if err != nil {
		return fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	flat := kvm.Segment{Base: 0, Limit: 0xFFFFFFFF, Present: 1, S: 1, G: 1, DB: 1}
	cs, ds := flat, flat
	cs.Selector, cs.Typ = bootCS, 0xB // execute/read, accessed
	ds.Selector, ds.Typ = bootDS, 0x3 // read/write, accessed
	sregs.CS = cs
	sregs.DS, sregs.ES, sregs.FS, sregs.GS, sregs.SS = ds, ds, ds, ds, ds
	sregs.TR = kvm.Segment{Limit: 0xFFFF, Typ: 0xB, Present: 1}
	sregs.GDT.Base, sregs.GDT.Limit = e.GDTBase, e.GDTLimit
	sregs.CR0, sregs.CR3, sregs.CR4, sregs.EFER = cr0PE|cr0ET|cr0NE, 0, 0, 0
	if err := kvm.SetSregs(vcpuFd, sregs); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	if err := kvm.SetRegs(vcpuFd, &kvm.Regs{RIP: e.RIP, RBX: e.RBX, RSP: e.RSP, RFLAGS: 0x2}); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	return nil
}

// loop is the whole VMM: KVM_RUN and an inline answer to each exit.
func loop(vcpuFd uintptr, r *kvmext.Run, serial bool) (int, error) {
	kvmRun := kvm.IIO(0x80) // KVM_RUN
	for {
		if _, err := kvm.Ioctl(vcpuFd, kvmRun, 0); err != nil {
			if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN) {
				continue
			}
			return statusVMMError, fmt.Errorf("KVM_RUN: %w", err)
		}
		switch reason := r.ExitReason(); reason {
		case kvmext.ExitIO:
			dir, size, port, count, data, err := r.IO()
			if err != nil {
				return statusVMMError, err
			}
			if dir == kvmext.IOOut {
				if port == debugExitPort && count > 0 {
					v := uint32(0)
					for i := int(size) - 1; i >= 0; i-- {
						v = v<<8 | uint32(data[i])
					}
					return int(v<<1 | 1), nil
				}
				if serial && port == com1THR {
					if _, err := os.Stdout.Write(data[:1]); err != nil {
						return statusVMMError, fmt.Errorf("serial output: %w", err)
					}
				}
				continue
			}
			for i := range data {
				data[i] = 0xFF
			}
			if port == com1LSR {
				for i := range data {
					data[i] = lsrTxEmpty
				}
			}
		case kvmext.ExitMMIO:
			if _, data, write := r.MMIO(); !write {
				for i := range data {
					data[i] = 0xFF
				}
			}
		case kvmext.ExitHLT:
			// An idle guest with interrupts off: nothing will wake it.
			if _, err := os.Stdout.WriteString(haltedLine + "\n"); err != nil {
				return statusVMMError, fmt.Errorf("reporting the halt: %w", err)
			}
			for {
				unix.Pause()
			}
		case kvmext.ExitIntr:
		case kvmext.ExitShutdown:
			return statusTripleFault, errors.New("guest triple fault")
		case kvmext.ExitInternalError:
			sub, _ := r.InternalError()
			return statusInternalError, fmt.Errorf("KVM internal error, suberror %d", sub)
		default:
			return statusVMMError, fmt.Errorf("unexpected exit %s", kvmext.ExitReasonName(reason))
		}
	}
}
