package legacy

import (
	"sync/atomic"

	"github.com/kvmm/kvmm/devices"
)

// POST is the port 0x80 POST-code register. Firmware writes progress codes
// to it and Linux writes to it for I/O delays (outb to 0x80 after slow ISA
// accesses), so it is one atomic store: no lock, no log.
type POST struct {
	last atomic.Uint32
}

var _ devices.Device = (*POST)(nil)

// NewPOST returns the port with code 0.
func NewPOST() *POST { return &POST{} }

// Last returns the last code written.
func (p *POST) Last() uint8 { return uint8(p.last.Load()) }

// Read returns the last code written, as QEMU's port 0x80 does; bytes of a
// wider access that fall past the port read 0xFF.
func (p *POST) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0xFF
		if inRange(offset, i, POSTPortSize) {
			data[i] = p.Last()
		}
	}
}

// Write remembers the code; bytes past the port are not its own.
func (p *POST) Write(offset uint64, data []byte) {
	for i, b := range data {
		if inRange(offset, i, POSTPortSize) {
			p.last.Store(uint32(b))
		}
	}
}
