package virtio_test

import (
	"encoding/binary"
	"testing"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

// FuzzCommonConfig drives the function with arbitrary register traffic: 12
// bytes per operation (kind, 16-bit offset, width, 64-bit value) against
// the common configuration, ISR, device configuration and notification
// regions, the MSI-X table and PCI configuration space, interleaved with
// reads. Whatever the sequence, nothing panics, the status register never
// shows a bit a driver cannot set except NEEDS_RESET, and a FEATURES_OK
// that reads back set means the driver features were offered and include
// VERSION_1.
func FuzzCommonConfig(f *testing.F) {
	op := func(kind byte, off uint16, width byte, v uint64) []byte {
		b := make([]byte, 12)
		b[0], b[3] = kind, width
		binary.LittleEndian.PutUint16(b[1:], off)
		binary.LittleEndian.PutUint64(b[4:], v)
		return b
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	// A full driver initialisation with a queue in RAM, then a request.
	initSeq := cat(
		op(0, virtio.CommonDeviceStatus, 1, 0),
		op(0, virtio.CommonDeviceStatus, 1, 3),
		op(0, virtio.CommonDriverFeatureSelect, 4, 1),
		op(0, virtio.CommonDriverFeature, 4, 1),
		op(0, virtio.CommonDeviceStatus, 1, 11),
		op(0, virtio.CommonQueueSelect, 2, 0),
		op(0, virtio.CommonQueueSize, 2, 8),
		op(0, virtio.CommonQueueDesc, 8, 0x100000),
		op(0, virtio.CommonQueueDriver, 8, 0x101000),
		op(0, virtio.CommonQueueDevice, 8, 0x102000),
		op(0, virtio.CommonQueueEnable, 2, 1),
		op(0, virtio.CommonDeviceStatus, 1, 15),
		op(4, 0, 2, 0),
	)
	f.Add(initSeq)
	f.Add(cat(initSeq, op(0, virtio.CommonDeviceStatus, 1, 0), initSeq))
	f.Add(cat(op(5, 0x04, 2, 0), op(5, 0x20, 4, 0xFFFFFFFF), op(6, 0x20, 4, 0), op(5, 0x04, 2, 6)))
	f.Add(cat(op(0, virtio.CommonDriverFeatureSelect, 4, 0), op(0, virtio.CommonDriverFeature, 4, 0xFFFFFFFF),
		op(0, virtio.CommonDeviceStatus, 1, 8), op(1, virtio.CommonDeviceStatus, 1, 0)))
	f.Add(cat(op(7, 0, 4, 0xFEE00000), op(5, 0x98, 2, 0x8000), op(0, virtio.CommonConfigMSIXVector, 2, 0), op(2, 0, 1, 0)))

	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 12*256 {
			ops = ops[:12*256]
		}
		d := newEcho()
		h := virtiotest.New(t, d, virtiotest.Options{MemSize: 4 << 20, IOEventFDs: len(ops)%2 == 0})
		bar, msix := h.BAR, h.MSIXBAR
		buf := make([]byte, 8)
		for ; len(ops) >= 12; ops = ops[12:] {
			kind, off, v := ops[0]%8, uint64(binary.LittleEndian.Uint16(ops[1:])), binary.LittleEndian.Uint64(ops[4:])
			n := 1 << (ops[3] % 4)
			b := buf[:n]
			for i := range b {
				b[i] = byte(v >> (8 * i))
			}
			switch kind {
			case 0:
				h.MMIO.Write(bar+virtio.CommonOffset+off%0x1000, b)
			case 1:
				h.MMIO.Read(bar+off%0x4000, b)
			case 2:
				h.MMIO.Read(bar+virtio.ISROffset, b)
			case 3:
				h.MMIO.Write(bar+virtio.DeviceCfgOffset+off%0x1000, b)
			case 4:
				h.MMIO.Write(bar+virtio.NotifyOffset+off%0x1000, b)
			case 5:
				h.Root.ConfigWrite(0, h.Slot, 0, int(off%0x1000), b[:min(n, 4)])
			case 6:
				h.Root.ConfigRead(0, h.Slot, 0, int(off%0x1000), b[:min(n, 4)])
			case 7:
				h.MMIO.Write(msix+off%0x1000, b)
			}
			s := h.Transport.Status()
			if s&^(virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusDriverOK|
				virtio.StatusFeaturesOK|virtio.StatusFailed|virtio.StatusNeedsReset) != 0 {
				t.Fatalf("status %#x has bits nobody may set", s)
			}
		}
		// Read the negotiation back through the registers, if they still
		// decode where they were.
		var st [1]byte
		if !h.MMIO.Read(bar+virtio.CommonDeviceStatus, st[:]) || st[0]&virtio.StatusFeaturesOK == 0 {
			return
		}
		var feat uint64
		for sel := range 2 {
			binary.LittleEndian.PutUint32(buf, uint32(sel))
			h.MMIO.Write(bar+virtio.CommonDriverFeatureSelect, buf[:4])
			h.MMIO.Read(bar+virtio.CommonDriverFeature, buf[:4])
			feat |= uint64(binary.LittleEndian.Uint32(buf)) << (32 * sel)
		}
		if feat&^d.features != 0 || feat&virtio.FeatureVersion1 == 0 {
			t.Fatalf("FEATURES_OK with driver features %#x (offered %#x)", feat, d.features)
		}
	})
}
