package vhost

import (
	"encoding/binary"
	"fmt"
)

// VnetHdr is struct virtio_net_hdr_mrg_rxbuf (include/uapi/linux/
// virtio_net.h), the TapVnetHdrLen-byte header in front of every frame on a
// tap queue and at the start of every virtio-net buffer; little-endian, as
// VERSION_1 and the tun driver on x86 both use. A userspace virtio-net
// backend passes it through between guest buffers and the tap unchanged,
// with one exception: on receive the tun driver does not produce
// NumBuffers (Linux 6.1 leaves bytes 10..11 of the read buffer as they
// were, later kernels zero them), so the device writes it into the guest's
// first buffer itself.
type VnetHdr struct {
	Flags      uint8  // VnetHdrFNeedsCsum, VnetHdrFDataValid
	GSOType    uint8  // VnetHdrGSO*, possibly with VnetHdrGSOECN
	HdrLen     uint16 // length of the headers before the segmented payload
	GSOSize    uint16 // payload bytes per segment
	CsumStart  uint16 // where checksumming starts, from the frame's first byte
	CsumOffset uint16 // where the checksum goes, from CsumStart
	NumBuffers uint16 // MRG_RXBUF: guest buffers the frame spans
}

// VnetHdr flags and GSO types (virtio_net.h).
const (
	VnetHdrFNeedsCsum = 1
	VnetHdrFDataValid = 2

	VnetHdrGSONone  = 0
	VnetHdrGSOTCPv4 = 1
	VnetHdrGSOUDP   = 3
	VnetHdrGSOTCPv6 = 4
	VnetHdrGSOECN   = 0x80
)

// Put writes h into b[:TapVnetHdrLen].
func (h VnetHdr) Put(b []byte) {
	_ = b[TapVnetHdrLen-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
	binary.LittleEndian.PutUint16(b[10:], h.NumBuffers)
}

// ParseVnetHdr reads the header at the start of b.
func ParseVnetHdr(b []byte) (VnetHdr, error) {
	if len(b) < TapVnetHdrLen {
		return VnetHdr{}, fmt.Errorf("vnet header: %d bytes, want %d", len(b), TapVnetHdrLen)
	}
	return VnetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
		NumBuffers: binary.LittleEndian.Uint16(b[10:]),
	}, nil
}
