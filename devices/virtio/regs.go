package virtio

import (
	"encoding/binary"
)

// The BAR 4 regions. Each is a devices.Device whose offsets count from
// the region's start; they run on vCPU threads.

// commonRegion is struct virtio_pci_common_cfg (spec §4.1.4.3). Accesses
// of any width are accepted: a read returns the bytes of a consistent
// snapshot of the registers, a write is merged into the registers it
// overlaps (so 64-bit addresses written as two 32-bit halves work, as
// Linux writes them), fields in offset order.
type commonRegion struct{ t *Transport }

type commonField struct{ off, size int }

var commonFields = [...]commonField{
	{CommonDeviceFeatureSelect, 4}, {CommonDeviceFeature, 4}, {CommonDriverFeatureSelect, 4},
	{CommonDriverFeature, 4}, {CommonConfigMSIXVector, 2}, {CommonNumQueues, 2},
	{CommonDeviceStatus, 1}, {CommonConfigGeneration, 1}, {CommonQueueSelect, 2},
	{CommonQueueSize, 2}, {CommonQueueMSIXVector, 2}, {CommonQueueEnable, 2},
	{CommonQueueNotifyOff, 2}, {CommonQueueDesc, 8}, {CommonQueueDriver, 8},
	{CommonQueueDevice, 8}, {CommonQueueNotifyData, 2},
}

func (r commonRegion) Read(off uint64, data []byte) {
	t := r.t
	t.mu.Lock()
	img := t.commonImage()
	t.mu.Unlock()
	copyOut(img[:], off, data)
}

func (r commonRegion) Write(off uint64, data []byte) {
	t := r.t
	if off >= CommonCfgLen {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	img := t.commonImage()
	end := min(off+uint64(len(data)), CommonCfgLen)
	copy(img[off:end], data)
	for _, f := range commonFields {
		if uint64(f.off) < end && off < uint64(f.off+f.size) {
			t.writeCommon(f.off, le(img[f.off:f.off+f.size]))
		}
	}
}

// commonImage lays the registers out as the driver sees them (t.mu held).
func (t *Transport) commonImage() [CommonCfgLen]byte {
	var b [CommonCfgLen]byte
	e := binary.LittleEndian
	e.PutUint32(b[CommonDeviceFeatureSelect:], t.devFeatSel)
	if t.devFeatSel < 2 {
		e.PutUint32(b[CommonDeviceFeature:], uint32(t.offered>>(32*t.devFeatSel)))
	}
	e.PutUint32(b[CommonDriverFeatureSelect:], t.drvFeatSel)
	if t.drvFeatSel < 2 {
		e.PutUint32(b[CommonDriverFeature:], uint32(t.drvFeatures>>(32*t.drvFeatSel)))
	}
	e.PutUint16(b[CommonConfigMSIXVector:], uint16(t.configVector.Load()))
	e.PutUint16(b[CommonNumQueues:], uint16(len(t.queues)))
	b[CommonDeviceStatus] = t.Status()
	b[CommonConfigGeneration] = uint8(t.generation.Load())
	e.PutUint16(b[CommonQueueSelect:], t.queueSel)
	if q := t.selected(); q != nil {
		r := q.regs()
		e.PutUint16(b[CommonQueueSize:], r.size)
		e.PutUint16(b[CommonQueueMSIXVector:], q.Vector())
		if r.enabled {
			e.PutUint16(b[CommonQueueEnable:], 1)
		}
		e.PutUint16(b[CommonQueueNotifyOff:], t.queueSel)
		e.PutUint64(b[CommonQueueDesc:], r.layout.Desc)
		e.PutUint64(b[CommonQueueDriver:], r.layout.Driver)
		e.PutUint64(b[CommonQueueDevice:], r.layout.Device)
		e.PutUint16(b[CommonQueueNotifyData:], t.queueSel)
	}
	// A queue_select past the last queue reads queue_size 0: "not
	// available" (spec §4.1.4.3.2).
	return b
}

// writeCommon applies one field (t.mu held).
func (t *Transport) writeCommon(off int, v uint64) {
	switch off {
	case CommonDeviceFeatureSelect:
		t.devFeatSel = uint32(v)
	case CommonDriverFeatureSelect:
		t.drvFeatSel = uint32(v)
	case CommonDriverFeature:
		// Frozen once FEATURES_OK is set (spec §3.1.1).
		if t.drvFeatSel < 2 && t.Status()&StatusFeaturesOK == 0 {
			shift := 32 * t.drvFeatSel
			t.drvFeatures = t.drvFeatures&^(0xFFFFFFFF<<shift) | v<<shift
		}
	case CommonConfigMSIXVector:
		t.configVector.Store(uint32(t.checkVector(uint16(v))))
	case CommonDeviceStatus:
		t.writeStatus(uint8(v))
	case CommonQueueSelect:
		t.queueSel = uint16(v)
	case CommonQueueMSIXVector:
		if q := t.selected(); q != nil {
			old := q.vector.Swap(uint32(t.checkVector(uint16(v))))
			t.vectorChanged(q, uint16(old)) // hooks.go
		}
	case CommonQueueSize, CommonQueueEnable, CommonQueueDesc, CommonQueueDriver, CommonQueueDevice:
		q := t.selected()
		if q == nil || t.Status()&StatusDriverOK != 0 {
			return // no such queue, or the device is already live
		}
		r := q.regs()
		switch off {
		case CommonQueueSize:
			r.size = uint16(v)
		case CommonQueueEnable:
			r.enabled = v == 1
		case CommonQueueDesc:
			r.layout.Desc = v
		case CommonQueueDriver:
			r.layout.Driver = v
		case CommonQueueDevice:
			r.layout.Device = v
		}
		q.setRegs(r)
	}
}

// isrRegion is the ISR status byte: reading it returns and clears it and
// deasserts INTx (spec §4.1.4.5). Wider reads return it in the first
// byte; writes are ignored.
type isrRegion struct{ t *Transport }

func (r isrRegion) Read(off uint64, data []byte) {
	clear(data)
	if off == 0 && len(data) > 0 {
		data[0] = r.t.readISR()
	}
}

func (isrRegion) Write(uint64, []byte) {}

// deviceRegion is the device-specific configuration. Bytes past its
// length read as zero and ignore writes.
type deviceRegion struct{ t *Transport }

func (r deviceRegion) Read(off uint64, data []byte) {
	clear(data)
	n := uint64(r.t.cfgLen)
	if off >= n {
		return
	}
	end := min(off+uint64(len(data)), n)
	r.t.dev.ReadConfig(int(off), data[:end-off])
}

func (r deviceRegion) Write(off uint64, data []byte) {
	if off+uint64(len(data)) <= uint64(r.t.cfgLen) {
		r.t.dev.WriteConfig(int(off), data)
	}
}

// notifyRegion takes queue notifications that arrive as MMIO exits: when
// there is no ioeventfd, or for an access it does not match. Queue n is
// at n*NotifyOffMultiplier; the value written (the queue index) is not
// needed.
type notifyRegion struct{ t *Transport }

func (notifyRegion) Read(_ uint64, data []byte) { clear(data) }

func (r notifyRegion) Write(off uint64, _ []byte) {
	t := r.t
	qi := off / NotifyOffMultiplier
	if qi >= uint64(len(t.queues)) {
		return
	}
	t.m.mmioNotifies.Add(1)
	if err := t.queues[qi].kick.Signal(); err != nil {
		t.warn.Warn("virtio: queue notification", "queue", qi, "err", err)
	}
}

func copyOut(img []byte, off uint64, data []byte) {
	clear(data)
	if off < uint64(len(img)) {
		copy(data, img[off:])
	}
}

func le(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}
