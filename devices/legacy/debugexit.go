package legacy

import (
	"encoding/binary"

	"github.com/kvmm/kvmm/devices"
)

// DebugExit is QEMU's isa-debug-exit: a guest (a test kernel, a firmware
// test) ends the VM with a status of its choosing by writing a value v to
// the port; the VM exits with (v << 1) | 1, so a guest can never fake the
// status 0 of a clean poweroff.
type DebugExit struct {
	power devices.PowerEvents
}

var _ devices.Device = (*DebugExit)(nil)

// NewDebugExit returns the port; power receives the exit status (nil:
// writes are ignored).
func NewDebugExit(power devices.PowerEvents) *DebugExit {
	return &DebugExit{power: power}
}

// Read returns all ones: the port has nothing to read, as in QEMU.
func (d *DebugExit) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0xFF
	}
}

// Write takes a 1-, 2- or 4-byte little-endian value at any offset in the
// range (QEMU ignores the address too) and requests the exit. Other widths
// cannot come from an x86 OUT and are ignored.
func (d *DebugExit) Write(offset uint64, data []byte) {
	var v uint64
	switch len(data) {
	case 1:
		v = uint64(data[0])
	case 2:
		v = uint64(binary.LittleEndian.Uint16(data))
	case 4:
		v = uint64(binary.LittleEndian.Uint32(data))
	default:
		return
	}
	if d.power != nil {
		d.power.DebugExit(int(v<<1 | 1))
	}
}
