package vmm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"unsafe"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/acpi"
	"github.com/kvmm/kvmm/builtin"
	"github.com/kvmm/kvmm/devices"
	"github.com/kvmm/kvmm/devices/legacy"
	"github.com/kvmm/kvmm/kvmext"
	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/memory"
	"github.com/kvmm/kvmm/vcpu"
	"github.com/kvmm/kvmm/vmm/loader"
)

// KVM placement of the TSS and identity-map pages Intel VMX needs below
// 4 GiB; they sit at the top of the MMIO hole, clear of every device.
const (
	tssAddr         = 0xFFFBD000
	identityMapAddr = 0xFFFBC000
)

// machine is one boot of the VM: KVM VM fd, RAM, buses, devices and vCPUs.
// A guest reboot discards it and builds a new one from the same Config.
type machine struct {
	cfg   Config
	log   *slog.Logger
	kvmFd uintptr
	vmFd  uintptr

	mem      *memory.Guest
	facsAddr uint64 // the FACS, which holds the S3 waking vector
	pio      *devices.Bus
	mmio     *devices.Bus
	vcpus    []*vcpu.VCPU

	// events ends this machine: the first event posted wins.
	events chan event

	serial   *legacy.Serial
	rtc      *legacy.RTC
	pm       *acpi.PM
	postCode *legacy.POST
	pci      *pciState // PCI hierarchy (pci.go)

	hv  *hypervState // Hyper-V personality (hyperv.go); nil for the others
	vmw *vmwareState // VMware personality (balloon.go); nil for the others

	virtio *virtioState // virtio devices on PCI (virtio.go)
}

// newMachine creates the KVM VM and everything in it, ready to run.
func newMachine(cfg Config, kvmFd uintptr, serialOut io.Writer, vm *VM, log *slog.Logger) (*machine, error) {
	m := &machine{cfg: cfg, log: log, kvmFd: kvmFd, events: make(chan event, 1)}
	power := powerSink{vm: vm, m: m}
	built := false
	defer func() {
		if !built {
			m.close()
		}
	}()
	vmFd, err := kvm.CreateVM(kvmFd)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	m.vmFd = vmFd
	if err := kvm.SetTSSAddr(vmFd, tssAddr); err != nil {
		return nil, fmt.Errorf("KVM_SET_TSS_ADDR: %w", err)
	}
	if err := kvm.SetIdentityMapAddr(vmFd, identityMapAddr); err != nil {
		return nil, fmt.Errorf("KVM_SET_IDENTITY_MAP_ADDR: %w", err)
	}
	if err := kvm.CreateIRQChip(vmFd); err != nil {
		return nil, fmt.Errorf("KVM_CREATE_IRQCHIP: %w", err)
	}
	if err := kvm.CreatePIT2(vmFd); err != nil {
		return nil, fmt.Errorf("KVM_CREATE_PIT2: %w", err)
	}
	if m.mem, err = memory.New(uint64(cfg.Memory), memory.Options{HugePages: cfg.HugePages}); err != nil {
		return nil, err
	}
	for i, r := range m.mem.Regions() {
		region := &kvm.UserspaceMemoryRegion{Slot: uint32(i), GuestPhysAddr: r.GPA, MemorySize: r.Size(),
			UserspaceAddr: uint64(uintptr(unsafe.Pointer(&r.Host()[0])))}
		if err := kvm.SetUserMemoryRegion(vmFd, region); err != nil {
			return nil, fmt.Errorf("KVM_SET_USER_MEMORY_REGION slot %d [%#x, +%#x): %w", i, r.GPA, r.Size(), err)
		}
	}
	if err := m.addDevices(serialOut, power); err != nil {
		return nil, err
	}
	if err := m.addVirtio(serialOut); err != nil { // attached to PCI by addPCI
		return nil, err
	}
	if err := m.addNet(vm.net); err != nil { // virtio-net on the VM's taps (net.go)
		return nil, err
	}
	if err := m.addPCI(); err != nil {
		return nil, err
	}
	tables, err := acpi.Build(m.acpiConfig())
	if err != nil {
		return nil, fmt.Errorf("ACPI tables: %w", err)
	}
	if err := m.mem.Write(tables.Base, tables.Image); err != nil {
		return nil, fmt.Errorf("ACPI tables at %#x: %w", tables.Base, err)
	}
	m.facsAddr = tables.FACSAddr
	m.pm.SetOnSuspend(func() { vm.guestSuspend(m) })
	m.rtc.SetOnAlarm(func() { vm.rtcAlarm(m) })
	entry, err := m.loadKernel(tables.RSDPAddr)
	if err != nil {
		return nil, err
	}
	if err := m.createVCPUs(entry); err != nil {
		return nil, err
	}
	if err := m.setupHyperV(vm); err != nil {
		return nil, err
	}
	if err := m.setupVMware(vm); err != nil {
		return nil, err
	}
	built = true
	return m, nil
}

func (m *machine) irqLine(gsi uint32) devices.IRQLine {
	return devices.IRQLineFunc(func(high bool) error { return kvmext.IRQLine(m.vmFd, gsi, high) })
}

func (m *machine) addDevices(serialOut io.Writer, power devices.PowerEvents) error {
	m.pio, m.mmio = devices.NewBus("pio"), devices.NewBus("mmio")
	m.serial = legacy.NewSerial(serialOut, m.irqLine(layout.COM1IRQ), m.log.With("dev", "serial"))
	low := min(uint64(m.cfg.Memory), layout.MMIOHoleStart)
	m.rtc = legacy.NewRTC(m.irqLine(layout.RTCIRQ), low, uint64(m.cfg.Memory)-low, nil, m.log.With("dev", "rtc"))
	m.pm = acpi.NewPM(m.irqLine(layout.SCIIRQ), power, nil, m.log.With("dev", "acpi-pm"))
	m.postCode = legacy.NewPOST()
	i8042 := legacy.NewI8042(power, m.log.With("dev", "i8042"))
	i8042.SetIRQs(m.irqLine(layout.KbdIRQ), m.irqLine(layout.AuxIRQ))
	for _, d := range []struct {
		base, size uint64
		name       string
		dev        devices.Device
	}{
		{layout.COM1Port, 8, "serial-com1", m.serial},
		{layout.RTCPort, 2, "cmos-rtc", m.rtc},
		{layout.I8042Port, 1, "i8042-data", i8042.Data()},
		{layout.I8042CmdPort, 1, "i8042-cmd", i8042.Command()},
		{layout.POSTPort, 1, "post", m.postCode},
		{layout.DebugExitPort, 4, "debug-exit", legacy.NewDebugExit(power)},
		{layout.PMBase, acpi.PMBlockSize, "acpi-pm", m.pm},
	} {
		if err := m.pio.Insert(d.base, d.size, d.name, d.dev); err != nil {
			return err
		}
	}
	return nil
}

// loadKernel loads the configured kernel, or the built-in guest.
func (m *machine) loadKernel(rsdp uint64) (vcpu.BootState, error) {
	p := loader.Params{Cmdline: m.cfg.Cmdline, RSDPAddr: rsdp, MemMap: loader.MemoryMap(m.mem)}
	if m.cfg.Kernel == "" {
		img := builtin.SelfTest()
		p.Kernel, p.KernelSize = bytes.NewReader(img), int64(len(img))
	} else {
		f, err := os.Open(m.cfg.Kernel)
		if err != nil {
			return vcpu.BootState{}, fmt.Errorf("kernel: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return vcpu.BootState{}, fmt.Errorf("kernel: %w", err)
		}
		p.Kernel, p.KernelSize = f, st.Size()
	}
	if m.cfg.Initrd != "" {
		f, err := os.Open(m.cfg.Initrd)
		if err != nil {
			return vcpu.BootState{}, fmt.Errorf("initrd: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return vcpu.BootState{}, fmt.Errorf("initrd: %w", err)
		}
		p.Initrd, p.InitrdSize = f, st.Size()
	}
	e, err := loader.Load(m.mem, p)
	if err != nil {
		name := m.cfg.Kernel
		if name == "" {
			name = "built-in guest"
		}
		return vcpu.BootState{}, fmt.Errorf("load %s: %w", name, err)
	}
	b := vcpu.BootState{RIP: e.RIP, RSI: e.RSI, RBX: e.RBX, RSP: e.RSP, GDTBase: e.GDTBase, GDTLimit: e.GDTLimit, CR3: e.CR3}
	switch e.Mode {
	case loader.ModeLong64:
		b.Mode = vcpu.BootLong64
	case loader.ModePVH32:
		b.Mode = vcpu.BootPVH32
	default:
		return b, fmt.Errorf("loader returned unknown boot mode %v", e.Mode)
	}
	return b, nil
}

func (m *machine) createVCPUs(boot vcpu.BootState) error {
	supported := &kvm.CPUID{Nent: 256, Entries: make([]kvm.CPUIDEntry2, 256)}
	if err := kvm.GetSupportedCPUID(m.kvmFd, supported); err != nil {
		return fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
	}
	entries := supported.Entries[:supported.Nent]
	model, _ := vcpu.ParseModel(m.cfg.CPUModel)
	pers, _ := vcpu.ParsePersonality(m.cfg.Personality)
	for id := 0; id < m.cfg.CPUs; id++ {
		v, err := vcpu.New(m.kvmFd, m.vmFd, id, m.log)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, v)
		v.ReadGuest = m.mem.Read
		if err := v.SetCPUID(vcpu.ComposeCPUID(entries, id, m.cfg.CPUs, model, pers)); err != nil {
			return err
		}
		if err := v.SetBootMSRs(); err != nil {
			return err
		}
		if err := v.SetupLAPIC(); err != nil {
			return err
		}
		// Application processors stay in wait-for-SIPI (KVM's default for
		// every vCPU but 0 with the in-kernel irqchip): the guest starts
		// them with INIT/SIPI, as on hardware.
		if id == 0 {
			if err := v.SetBootState(boot); err != nil {
				return err
			}
		}
	}
	return nil
}

// PIO and MMIO implement vcpu.Handler: route the exit to the bus, and answer
// reads of unmapped addresses with all ones, as an empty ISA or PCI bus does.
func (m *machine) PIO(v *vcpu.VCPU, port uint16, data []byte, write bool) {
	if m.vmw.pio(v, port, data, write) {
		return // the VMware backdoor and balloon ports take registers (balloon.go)
	}
	if write {
		m.pio.Write(uint64(port), data)
		return
	}
	if !m.pio.Read(uint64(port), data) {
		fill(data, 0xFF)
	}
}

func (m *machine) MMIO(_ *vcpu.VCPU, addr uint64, data []byte, write bool) {
	if write {
		m.mmio.Write(addr, data)
		return
	}
	if !m.mmio.Read(addr, data) {
		fill(data, 0xFF)
	}
}

// ReadMSR and WriteMSR implement vcpu.MSRHandler: the MSR exits KVM hands
// to user space, which only the Hyper-V personality asks for (hyperv.go).
func (m *machine) ReadMSR(v *vcpu.VCPU, index uint32) (uint64, bool) { return m.hv.readMSR(v, index) }

func (m *machine) WriteMSR(v *vcpu.VCPU, index uint32, value uint64) bool {
	return m.hv.writeMSR(v, index, value)
}

// parkAll takes every vCPU out of KVM_RUN and waits until all are parked.
func (m *machine) parkAll() {
	for _, v := range m.vcpus {
		v.RequestPause()
	}
	for _, v := range m.vcpus {
		v.WaitParked()
	}
	m.hypervPause()
}

// resumeAll lets parked vCPUs run again.
func (m *machine) resumeAll() {
	m.hypervResume()
	for _, v := range m.vcpus {
		v.Resume()
	}
}

// post delivers an event; only the first one of a machine counts.
func (m *machine) post(ev event) {
	select {
	case m.events <- ev:
	default:
	}
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

// close releases everything; vCPUs must have stopped.
func (m *machine) close() {
	var errs []error
	for _, v := range m.vcpus {
		errs = append(errs, v.Close())
	}
	if m.rtc != nil {
		m.rtc.Close()
	}
	errs = append(errs, m.closeVirtio()) // workers stop, disks are synced; ioeventfds need the VM fd
	errs = append(errs, m.closePCI())    // its irqfds need the VM fd
	if m.vmFd != 0 {
		errs = append(errs, unix.Close(int(m.vmFd)))
	}
	if m.mem != nil {
		errs = append(errs, m.mem.Close())
	}
	if err := errors.Join(errs...); err != nil {
		m.log.Warn("releasing VM resources", "err", err)
	}
}
