package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/kvmm/kvmm/devices"
	"github.com/kvmm/kvmm/devices/pci"
	"github.com/kvmm/kvmm/memory"
)

// PCI layout of a transport, the one QEMU's virtio-pci uses with
// disable-legacy=on, so a guest sees the same function under both: BAR 4
// is a 64-bit prefetchable memory BAR of 16 KiB with the common
// configuration, ISR, device configuration and notification regions 4 KiB
// apart; BAR 1 is a 32-bit memory BAR with the MSI-X table and, at 2 KiB,
// the PBA (MSI-X tables do not belong in prefetchable BARs).
const (
	VirtioBAR       = 4
	MSIXBAR         = 1
	virtioBARSize   = 0x4000
	regionSize      = 0x1000
	CommonOffset    = 0x0000
	ISROffset       = 0x1000
	DeviceCfgOffset = 0x2000
	NotifyOffset    = 0x3000
	// NotifyOffMultiplier: queue n is notified at NotifyOffset + 4n, one
	// address per queue, so each can have its own ioeventfd without
	// datamatch (QEMU's default too).
	NotifyOffMultiplier = 4
	msixPBAMinOffset    = 0x800
	// MaxQueues is what the notification region can address.
	MaxQueues = regionSize / NotifyOffMultiplier
)

// IOEventFDs binds guest writes to an address to an eventfd inside the
// hypervisor (KVM_IOEVENTFD), so a queue notification wakes the device's
// worker without an exit to kvmm. The transport registers each active
// queue's notification address and keeps the registration where the BAR
// is mapped.
type IOEventFDs interface {
	Register(addr uint64, fd int) error
	Unregister(addr uint64, fd int) error
}

// TransportConfig builds a Transport.
type TransportConfig struct {
	Device Device
	Mem    *memory.Guest
	// Router creates the MSI-X vectors (pci.Root.Router()); nil gives a
	// function with INTx only.
	Router pci.MSIRouter
	// IOEventFDs, when set, carries queue notifications; nil leaves them
	// to MMIO exits (the fallback path, always present).
	IOEventFDs IOEventFDs
	// Name labels logs ("virtio-blk0"); empty uses the device type.
	Name string
	Log  *slog.Logger
}

// Transport is a virtio 1.x PCI function (modern, non-transitional, spec
// §4.1) around a Device. It is a pci.Function: add it to a bus before
// enumeration.
type Transport struct {
	dev     Device
	mem     *memory.Guest
	cfg     *pci.Config
	msix    *pci.MSIX
	ioev    IOEventFDs
	name    string
	log     *slog.Logger
	warn    *RateLimitedLog
	offered uint64
	queues  []*Queue
	cfgLen  int
	regions []barRegion
	m       transportMetrics

	// mu serialises the driver's register accesses with activation,
	// reset and BAR moves. Workers never take it, so a reset may wait for
	// them while holding it.
	mu          sync.Mutex
	devFeatSel  uint32
	drvFeatSel  uint32
	drvFeatures uint64
	features    uint64 // negotiated, valid once FEATURES_OK is set
	queueSel    uint16
	active      bool
	closed      bool
	notifyBase  uint64
	notifyMap   bool
	ioevAt      map[int]uint64 // queue -> registered notification address

	status       atomic.Uint32 // device_status (NEEDS_RESET may be set by workers)
	isBroken     atomic.Bool
	configVector atomic.Uint32
	generation   atomic.Uint32

	isrMu sync.Mutex // ISR status and the INTx level that follows it
	isr   uint8
}

// barRegion is a handler at an offset of one of the function's BARs, for
// the PCI configuration access capability.
type barRegion struct {
	bar      uint8
	off, len uint32
	dev      devices.Device
}

// NewTransport builds the PCI function of dev.
func NewTransport(c TransportConfig) (*Transport, error) {
	dev := c.Device
	if dev == nil || c.Mem == nil {
		return nil, errors.New("virtio transport: Device and Mem are required")
	}
	name := c.Name
	if name == "" {
		name = "virtio-" + dev.Type().String()
	}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("dev", name)
	t := &Transport{dev: dev, mem: c.Mem, ioev: c.IOEventFDs, name: name, log: log,
		warn: NewRateLimitedLog(log, DefaultLogInterval), offered: dev.Features(), cfgLen: dev.ConfigSize(),
		ioevAt: map[int]uint64{}}
	if t.offered&FeatureVersion1 == 0 {
		return nil, fmt.Errorf("%s: the device does not offer VIRTIO_F_VERSION_1 (no legacy interface here)", name)
	}
	if t.offered&FeatureRingPacked != 0 {
		return nil, fmt.Errorf("%s: VIRTIO_F_RING_PACKED is offered but only split rings are implemented", name)
	}
	if t.cfgLen < 0 || t.cfgLen > regionSize {
		return nil, fmt.Errorf("%s: device configuration of %d bytes does not fit %d", name, t.cfgLen, regionSize)
	}
	sizes := dev.QueueSizes()
	if len(sizes) == 0 || len(sizes) > MaxQueues {
		return nil, fmt.Errorf("%s: %d queues, want 1..%d", name, len(sizes), MaxQueues)
	}
	ok := false
	defer func() {
		if !ok {
			t.closeQueues()
		}
	}()
	for i, s := range sizes {
		q, err := newQueue(i, s, t)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		t.queues = append(t.queues, q)
	}
	t.configVector.Store(NoVector)
	if err := t.buildPCI(c.Router); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ok = true
	return t, nil
}

// pciClass is the class QEMU gives each type, which guests have seen for
// years.
func pciClass(dev Device) uint32 {
	if c, ok := dev.(PCIClasser); ok {
		return c.PCIClass()
	}
	switch dev.Type() {
	case TypeNet:
		return 0x020000 // Ethernet controller
	case TypeBlock:
		return 0x010000 // SCSI storage controller
	case TypeConsole:
		return 0x078000 // communication controller
	}
	return 0x00FF00 // unclassified
}

func (t *Transport) buildPCI(router pci.MSIRouter) error {
	cfg, err := pci.NewConfig(pci.Header{VendorID: PCIVendorID, DeviceID: PCIDeviceIDBase + uint16(t.dev.Type()),
		Revision: PCIRevision, Class: pciClass(t.dev),
		SubsysVendorID: pci.SubsysVendorQEMU, SubsysID: pci.SubsysIDQEMU, InterruptPin: pci.PinA})
	if err != nil {
		return err
	}
	t.cfg = cfg
	t.regions = []barRegion{
		{VirtioBAR, CommonOffset, regionSize, commonRegion{t}},
		{VirtioBAR, ISROffset, regionSize, isrRegion{t}},
		{VirtioBAR, NotifyOffset, regionSize, notifyRegion{t}},
	}
	if t.cfgLen > 0 {
		t.regions = append(t.regions, barRegion{VirtioBAR, DeviceCfgOffset, regionSize, deviceRegion{t}})
	}
	var regs []pci.Region
	for _, r := range t.regions {
		reg := pci.Region{Name: regionName(r.off), Offset: uint64(r.off), Size: uint64(r.len), Dev: r.dev}
		if r.off == NotifyOffset {
			reg.Mapped = t.notifyMapped
		}
		regs = append(regs, reg)
	}
	if err := cfg.SetBAR(VirtioBAR, pci.BAR{Kind: pci.BARMem64, Size: virtioBARSize, Prefetchable: true, Regions: regs}); err != nil {
		return err
	}
	caps := [][]byte{
		virtioCap(PCICapCommonCfg, CommonOffset, CommonCfgLen, nil),
		virtioCap(PCICapNotifyCfg, NotifyOffset, uint32(len(t.queues))*NotifyOffMultiplier,
			binary.LittleEndian.AppendUint32(nil, NotifyOffMultiplier)),
		virtioCap(PCICapISRCfg, ISROffset, 1, nil),
	}
	if t.cfgLen > 0 {
		caps = append(caps, virtioCap(PCICapDeviceCfg, DeviceCfgOffset, uint32(t.cfgLen), nil))
	}
	for _, data := range caps {
		if _, err := cfg.AddCapability(pci.Capability{ID: pci.CapIDVendor, Data: data}); err != nil {
			return err
		}
	}
	if err := t.addPCICfgCap(); err != nil {
		return err
	}
	if router == nil {
		return nil
	}
	m, err := pci.NewMSIX(len(t.queues)+1, router, t.log)
	if err != nil {
		return err
	}
	t.msix = m
	tableLen := m.TableSize()
	pbaOff := max(uint64(msixPBAMinOffset), (tableLen+msixPBAMinOffset-1)&^(msixPBAMinOffset-1))
	barSize := uint64(regionSize)
	for barSize < pbaOff+m.PBASize() {
		barSize <<= 1
	}
	if err := cfg.SetBAR(MSIXBAR, pci.BAR{Kind: pci.BARMem32, Size: barSize}); err != nil {
		return err
	}
	if _, err := cfg.AddMSIX(m, pci.MSIXLayout{TableBAR: MSIXBAR, TableOffset: 0, PBABAR: MSIXBAR, PBAOffset: pbaOff}); err != nil {
		return err
	}
	t.regions = append(t.regions, barRegion{MSIXBAR, 0, uint32(tableLen), m.Table()},
		barRegion{MSIXBAR, uint32(pbaOff), uint32(m.PBASize()), m.PBA()})
	return nil
}

func regionName(off uint32) string {
	switch off {
	case CommonOffset:
		return "virtio-common"
	case ISROffset:
		return "virtio-isr"
	case DeviceCfgOffset:
		return "virtio-device"
	}
	return "virtio-notify"
}

// virtioCap is struct virtio_pci_cap (spec §4.1.4) from cap_vndr on, in
// BAR 4, with extra fields appended (notify_off_multiplier).
func virtioCap(cfgType uint8, off, length uint32, extra []byte) []byte {
	d := make([]byte, 16, 16+len(extra))
	d = append(d, extra...)
	d[2] = byte(len(d)) // cap_len
	d[3] = cfgType
	d[4] = VirtioBAR
	binary.LittleEndian.PutUint32(d[8:], off)
	binary.LittleEndian.PutUint32(d[12:], length)
	return d
}

// PCI configuration access capability (spec §4.1.4.9): struct
// virtio_pci_cfg_cap, whose bar/offset/length select a window that
// pci_cfg_data reads and writes. Firmware without paging (SeaBIOS with a
// BAR above 4 GiB) reaches the registers through it.
const (
	pciCfgCapLen  = 20
	pciCfgBarOff  = 4
	pciCfgOffOff  = 8
	pciCfgLenOff  = 12
	pciCfgDataOff = 16
)

func (t *Transport) addPCICfgCap() error {
	data := virtioCap(PCICapPCICfg, 0, 0, make([]byte, 4))
	data[pciCfgBarOff] = 0
	w := make([]byte, pciCfgCapLen)
	w[pciCfgBarOff] = 0xFF
	for i := pciCfgOffOff; i < pciCfgCapLen; i++ {
		w[i] = 0xFF
	}
	_, err := t.cfg.AddCapability(pci.Capability{ID: pci.CapIDVendor, Data: data, Writable: w,
		Read: func(c []byte, off, size int) {
			if off < pciCfgDataOff+4 && off+size > pciCfgDataOff {
				t.pciCfgAccess(c, false)
			}
		},
		Write: func(c []byte, off, size int) {
			if off < pciCfgDataOff+4 && off+size > pciCfgDataOff {
				t.pciCfgAccess(c, true)
			}
		}})
	return err
}

// pciCfgAccess performs the window access: length 1, 2 or 4 at an offset
// aligned to it inside one of our regions; anything else does nothing (a
// read then returns what pci_cfg_data last held).
func (t *Transport) pciCfgAccess(c []byte, write bool) {
	bar := c[pciCfgBarOff]
	off := binary.LittleEndian.Uint32(c[pciCfgOffOff:])
	n := binary.LittleEndian.Uint32(c[pciCfgLenOff:])
	if (n != 1 && n != 2 && n != 4) || off%n != 0 {
		return
	}
	data := c[pciCfgDataOff : pciCfgDataOff+n]
	for _, r := range t.regions {
		if r.bar == bar && off >= r.off && off-r.off < r.len && n <= r.len-(off-r.off) {
			if write {
				r.dev.Write(uint64(off-r.off), data)
			} else {
				r.dev.Read(uint64(off-r.off), data)
			}
			return
		}
	}
}

// PCIConfig makes the transport a pci.Function.
func (t *Transport) PCIConfig() *pci.Config { return t.cfg }

// Device is the device model.
func (t *Transport) Device() Device { return t.dev }

// Queues are the device's queues.
func (t *Transport) Queues() []*Queue { return t.queues }

// Status is device_status as the driver reads it.
func (t *Transport) Status() uint8 { return uint8(t.status.Load()) }

// Metrics returns the transport's counters.
func (t *Transport) Metrics() TransportMetrics { return t.m.snapshot() }

// ConfigChanged bumps config_generation and, once the driver is running,
// sends the configuration change interrupt.
func (t *Transport) ConfigChanged() {
	t.generation.Add(1)
	if t.Status()&StatusDriverOK != 0 {
		t.configInterrupt()
	}
}

// Close resets the device, removes the ioeventfds and releases the
// device's backend and the queues' eventfds. The MSI-X vectors belong to
// the PCI root (pci.Root.Close). vCPUs must have stopped.
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	t.dev.Reset()
	t.unregisterIOEvents()
	for _, q := range t.queues {
		q.deactivate()
	}
	err := t.dev.Close()
	return errors.Join(err, t.closeQueues())
}

func (t *Transport) closeQueues() error {
	var errs []error
	for _, q := range t.queues {
		errs = append(errs, q.kick.Close())
	}
	return errors.Join(errs...)
}

// queueOwner.

func (t *Transport) broken() bool     { return t.isBroken.Load() }
func (t *Transport) dmaAllowed() bool { return t.cfg.BusMaster() }

func (t *Transport) fail(q *Queue, err error) {
	if t.isBroken.Swap(true) {
		return // already reported; the driver has to reset us
	}
	t.m.errors.Add(1)
	qi := -1
	if q != nil {
		qi = q.index
	}
	t.warn.Error("virtio device error: setting DEVICE_NEEDS_RESET", "queue", qi, "err", err)
	for {
		old := t.status.Load()
		if t.status.CompareAndSwap(old, old|StatusNeedsReset) {
			break
		}
	}
	if t.Status()&StatusDriverOK != 0 {
		t.configInterrupt()
	}
}

func (t *Transport) interrupt(q *Queue) { t.deliver(q.Vector(), ISRQueue) }

func (t *Transport) configInterrupt() {
	t.m.config.Add(1)
	// The configuration bit is set even with MSI-X (spec §4.1.4.5.1);
	// only INTx follows the ISR.
	t.isrMu.Lock()
	t.isr |= ISRConfig
	t.isrMu.Unlock()
	t.deliver(uint16(t.configVector.Load()), ISRConfig)
}

// deliver raises vector while MSI-X is enabled, else sets isrBit and
// asserts INTx (spec §4.1.5.3, §4.1.5.4).
func (t *Transport) deliver(vector uint16, isrBit uint8) {
	if t.msix != nil {
		if vector != NoVector {
			err := t.msix.Notify(vector)
			switch {
			case err == nil:
				t.m.msix.Add(1)
				return
			case !errors.Is(err, pci.ErrMSIXDisabled):
				t.warn.Warn("virtio: MSI-X notification failed", "vector", vector, "err", err)
				return
			}
		} else if t.msix.Enabled() {
			t.m.suppressed.Add(1)
			return
		}
	}
	t.m.intx.Add(1)
	t.isrMu.Lock()
	defer t.isrMu.Unlock()
	t.isr |= isrBit
	// Under isrMu, so an ISR read in between cannot leave the line up
	// with the ISR clear.
	t.cfg.SetINTx(true)
}

func (t *Transport) readISR() uint8 {
	t.isrMu.Lock()
	defer t.isrMu.Unlock()
	v := t.isr
	t.isr = 0
	t.cfg.SetINTx(false)
	return v
}

func (t *Transport) callFD(q *Queue) (int, bool) {
	if t.msix == nil || !t.msix.Enabled() || q.Vector() == NoVector {
		return -1, false
	}
	return t.msix.VectorEventFD(q.Vector())
}

// checkVector is what a vector register keeps: the value when the table
// has it, else NO_VECTOR, which tells the driver the mapping failed (spec
// §4.1.5.1.2).
func (t *Transport) checkVector(v uint16) uint16 {
	if t.msix == nil || int(v) >= t.msix.Size() {
		return NoVector
	}
	return v
}

func (t *Transport) selected() *Queue {
	if int(t.queueSel) < len(t.queues) {
		return t.queues[t.queueSel]
	}
	return nil
}

// writeStatus applies a driver write of device_status (t.mu held).
func (t *Transport) writeStatus(v uint8) {
	if v == 0 {
		t.reset()
		return
	}
	old := t.Status()
	// A driver cannot clear bits except by a reset (spec §2.1.1), nor set
	// NEEDS_RESET.
	nv := old | v&statusDriverBits
	if nv&StatusFeaturesOK != 0 && old&StatusFeaturesOK == 0 {
		if err := t.checkFeatures(t.drvFeatures); err != nil {
			t.m.refused.Add(1)
			t.warn.Warn("virtio: refusing FEATURES_OK", "features", fmt.Sprintf("%#x", t.drvFeatures),
				"offered", fmt.Sprintf("%#x", t.offered), "err", err)
			nv &^= StatusFeaturesOK
		} else {
			t.features = t.drvFeatures
		}
	}
	t.setStatus(nv)
	if nv&StatusDriverOK != 0 && old&StatusDriverOK == 0 {
		if nv&StatusFeaturesOK == 0 {
			t.fail(nil, errors.New("driver set DRIVER_OK without FEATURES_OK"))
			return
		}
		if err := t.activate(); err != nil {
			t.fail(nil, err)
		}
	}
}

// setStatus stores the driver's bits, keeping NEEDS_RESET.
func (t *Transport) setStatus(v uint8) {
	for {
		old := t.status.Load()
		if t.status.CompareAndSwap(old, uint32(v)|old&StatusNeedsReset) {
			return
		}
	}
}

func (t *Transport) checkFeatures(f uint64) error {
	if extra := f &^ t.offered; extra != 0 {
		return fmt.Errorf("driver accepted features the device did not offer: %#x", extra)
	}
	if f&FeatureVersion1 == 0 {
		return errors.New("driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)")
	}
	if v, ok := t.dev.(FeatureValidator); ok {
		return v.ValidateFeatures(f)
	}
	return nil
}

// activate starts the device at DRIVER_OK (t.mu held).
func (t *Transport) activate() error {
	if t.broken() {
		return errors.New("activation of a device that needs a reset")
	}
	var ready []*Queue
	for _, q := range t.queues {
		if !q.isEnabled() {
			continue
		}
		if err := q.activate(t.mem, t.features); err != nil {
			for _, r := range ready {
				r.deactivate()
			}
			return err
		}
		ready = append(ready, q)
	}
	if !t.cfg.BusMaster() {
		t.warn.Warn("virtio: DRIVER_OK with PCI bus mastering off: the device cannot use its queues until the driver enables it")
	}
	t.active = true
	t.registerIOEvents()
	if err := t.dev.Activate(Activation{Mem: t.mem, Features: t.features, Queues: t.queues, t: t}); err != nil {
		t.dev.Reset()
		t.unregisterIOEvents()
		for _, q := range ready {
			q.deactivate()
		}
		t.active = false
		return fmt.Errorf("activating the device: %w", err)
	}
	t.m.activations.Add(1)
	return nil
}

// reset is the device reset (status 0): stop the device and its workers,
// take the notification addresses out of KVM, forget every queue and the
// negotiation, and drop interrupt state (t.mu held). The driver then sets
// the device up from scratch, as Linux does on every S3 resume.
func (t *Transport) reset() {
	t.dev.Reset()
	t.unregisterIOEvents()
	for _, q := range t.queues {
		q.deactivate()
		q.resetDriver()
		q.kick.Drain()
	}
	t.devFeatSel, t.drvFeatSel, t.drvFeatures, t.features, t.queueSel = 0, 0, 0, 0, 0
	t.active = false
	t.configVector.Store(NoVector)
	t.isBroken.Store(false)
	t.status.Store(0)
	t.isrMu.Lock()
	t.isr = 0
	t.cfg.SetINTx(false)
	t.isrMu.Unlock()
	t.m.resets.Add(1)
}

// notifyMapped is the notification region's pci.Region.Mapped hook: the
// ioeventfds follow the BAR. It runs with the PCI root's lock held.
func (t *Transport) notifyMapped(gpa uint64, mapped bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.unregisterIOEvents()
	t.notifyBase, t.notifyMap = gpa, mapped
	if t.active {
		t.registerIOEvents()
	}
}

func (t *Transport) registerIOEvents() {
	if t.ioev == nil || !t.notifyMap || t.closed {
		return
	}
	for _, q := range t.queues {
		if _, done := t.ioevAt[q.index]; done || !q.Ready() {
			continue
		}
		addr := t.notifyBase + uint64(q.index)*NotifyOffMultiplier
		if err := t.ioev.Register(addr, q.kick.FD()); err != nil {
			// The MMIO exit still reaches the same eventfd.
			t.warn.Warn("virtio: ioeventfd unavailable, notifications go through MMIO exits",
				"queue", q.index, "addr", fmt.Sprintf("%#x", addr), "err", err)
			continue
		}
		t.ioevAt[q.index] = addr
		t.m.ioeventfds.Add(1)
	}
}

func (t *Transport) unregisterIOEvents() {
	for qi, addr := range t.ioevAt {
		if err := t.ioev.Unregister(addr, t.queues[qi].kick.FD()); err != nil {
			t.warn.Warn("virtio: removing ioeventfd", "queue", qi, "addr", fmt.Sprintf("%#x", addr), "err", err)
		}
		delete(t.ioevAt, qi)
	}
}
