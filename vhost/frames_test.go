package vhost_test

import (
	"encoding/binary"
	"errors"
	. "github.com/kvmm/kvmm/vhost"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/internal/netnstest"
)

// Frames for the data-path tests. They carry documentation addresses
// (192.0.2.0/24, TEST-NET-1) that no interface has: they exist only as bytes
// between a tap and a packet socket in the test's own namespace.

var (
	macA = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x0a}
	macB = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x0b}
	ipA  = net.IPv4(192, 0, 2, 1).To4()
	ipB  = net.IPv4(192, 0, 2, 2).To4()
)

const (
	etherTypeIPv4 = 0x0800
	// etherTypeTest is IEEE 802's "local experimental" EtherType 1: no
	// protocol handler takes it, so such frames only meet packet sockets.
	etherTypeTest = 0x88b5
	ethHdrLen     = 14
	ipv4HdrLen    = 20
	udpHdrLen     = 8
	tcpHdrLen     = 20
)

func ethHeader(dst, src net.HardwareAddr, etherType uint16) []byte {
	b := make([]byte, ethHdrLen)
	copy(b, dst)
	copy(b[6:], src)
	binary.BigEndian.PutUint16(b[12:], etherType)
	return b
}

// testFrame is a frame of the experimental EtherType with a marker payload.
func testFrame(dst, src net.HardwareAddr, size int, marker byte) []byte {
	f := ethHeader(dst, src, etherTypeTest)
	for len(f) < size {
		f = append(f, marker)
	}
	return f
}

// csumAdd adds b to a ones'-complement running sum.
func csumAdd(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func pseudoSum(src, dst net.IP, proto uint8, l4len int) uint32 {
	s := csumAdd(0, src)
	s = csumAdd(s, dst)
	return s + uint32(proto) + uint32(l4len)
}

func ipv4Header(proto uint8, l4len int) []byte {
	h := make([]byte, ipv4HdrLen)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(ipv4HdrLen+l4len))
	h[8] = 64
	h[9] = proto
	copy(h[12:], ipA)
	copy(h[16:], ipB)
	binary.BigEndian.PutUint16(h[10:], ^csumFold(csumAdd(0, h)))
	return h
}

// udpFrame builds an IPv4/UDP frame whose checksum is left partial (the
// folded pseudo-header sum, as Linux leaves it for CHECKSUM_PARTIAL) and
// the vnet header that asks the receiver to complete it.
func udpFrame(srcPort uint16, payload []byte) ([]byte, VnetHdr) {
	l4len := udpHdrLen + len(payload)
	f := append(ethHeader(macB, macA, etherTypeIPv4), ipv4Header(unix.IPPROTO_UDP, l4len)...)
	u := make([]byte, udpHdrLen)
	binary.BigEndian.PutUint16(u[0:], srcPort)
	binary.BigEndian.PutUint16(u[2:], 9) // discard
	binary.BigEndian.PutUint16(u[4:], uint16(l4len))
	binary.BigEndian.PutUint16(u[6:], csumFold(pseudoSum(ipA, ipB, unix.IPPROTO_UDP, l4len)))
	f = append(append(f, u...), payload...)
	return f, VnetHdr{Flags: VnetHdrFNeedsCsum, CsumStart: ethHdrLen + ipv4HdrLen, CsumOffset: 6}
}

// tcpGSOFrame builds one IPv4/TCP super-frame of payloadLen bytes to be
// cut into mss-byte segments, with the vnet header for TSO.
func tcpGSOFrame(payloadLen, mss int) ([]byte, VnetHdr) {
	l4len := tcpHdrLen + payloadLen
	f := append(ethHeader(macB, macA, etherTypeIPv4), ipv4Header(unix.IPPROTO_TCP, l4len)...)
	tcp := make([]byte, tcpHdrLen)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 9)
	binary.BigEndian.PutUint32(tcp[4:], 1000) // seq
	binary.BigEndian.PutUint32(tcp[8:], 1)    // ack
	tcp[12] = 5 << 4                          // data offset
	tcp[13] = 0x18                            // PSH|ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	binary.BigEndian.PutUint16(tcp[16:], csumFold(pseudoSum(ipA, ipB, unix.IPPROTO_TCP, l4len)))
	f = append(f, tcp...)
	for i := 0; i < payloadLen; i++ {
		f = append(f, byte(i))
	}
	return f, VnetHdr{
		Flags:      VnetHdrFNeedsCsum,
		GSOType:    VnetHdrGSOTCPv4,
		HdrLen:     ethHdrLen + ipv4HdrLen + tcpHdrLen,
		GSOSize:    uint16(mss),
		CsumStart:  ethHdrLen + ipv4HdrLen,
		CsumOffset: 16,
	}
}

// l4ChecksumOK verifies a complete IPv4 TCP/UDP checksum.
func l4ChecksumOK(frame []byte) bool {
	ip := frame[ethHdrLen:]
	l4 := ip[ipv4HdrLen:binary.BigEndian.Uint16(ip[2:])]
	return csumFold(csumAdd(pseudoSum(ip[12:16], ip[16:20], ip[9], len(l4)), l4)) == 0xffff
}

func isIPv4Proto(frame []byte, proto uint8) bool {
	return len(frame) > ethHdrLen+ipv4HdrLen && binary.BigEndian.Uint16(frame[12:]) == etherTypeIPv4 &&
		frame[ethHdrLen+9] == proto
}

func isTestFrame(frame []byte, marker byte) bool {
	return len(frame) > ethHdrLen && binary.BigEndian.Uint16(frame[12:]) == etherTypeTest && frame[ethHdrLen] == marker
}

// openPacketSock is the host side of the data-path tests: a packet socket
// bound to ifindex, closed when the test ends.
func openPacketSock(tb testing.TB, ifindex int, vnetHdr bool) *netnstest.PacketSocket {
	tb.Helper()
	return netnstest.OpenPacket(tb, ifindex, vnetHdr)
}

// send transmits frame out of the interface, with hdr in front when the
// socket has PACKET_VNET_HDR.
func send(tb testing.TB, ps *netnstest.PacketSocket, frame []byte, hdr VnetHdr) {
	tb.Helper()
	if err := ps.Send(frame, hdr); err != nil {
		tb.Fatal(err)
	}
}

// recv returns the next incoming (not outgoing) frame that match accepts,
// waiting at most 2 s.
func recv(tb testing.TB, ps *netnstest.PacketSocket, match func([]byte) bool) (VnetHdr, []byte) {
	tb.Helper()
	hdr, f, err := ps.Recv(2*time.Second, match)
	if err != nil {
		tb.Fatalf("packet socket recv: %v", err)
	}
	return hdr, f
}

// readQueue returns the frames match accepts that arrive on q within wait,
// each split into its vnet header and frame.
func readQueue(tb testing.TB, q *Queue, wait time.Duration, want int, match func([]byte) bool) ([]VnetHdr, [][]byte) {
	tb.Helper()
	var hdrs []VnetHdr
	var frames [][]byte
	buf := make([]byte, 65536+TapVnetHdrLen)
	deadline := time.Now().Add(wait)
	for len(frames) < want {
		if err := q.SetReadDeadline(deadline); err != nil {
			tb.Fatal(err)
		}
		n, err := q.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			tb.Fatalf("tap read: %v", err)
		}
		if n < TapVnetHdrLen {
			tb.Fatalf("tap read %d bytes, shorter than the vnet header", n)
		}
		if !match(buf[TapVnetHdrLen:n]) {
			continue
		}
		h, _ := ParseVnetHdr(buf[:n])
		hdrs = append(hdrs, h)
		frames = append(frames, append([]byte(nil), buf[TapVnetHdrLen:n]...))
	}
	return hdrs, frames
}

// withHdr prefixes frame with hdr as written to a tap queue.
func withHdr(hdr VnetHdr, frame []byte) []byte {
	b := make([]byte, TapVnetHdrLen, TapVnetHdrLen+len(frame))
	hdr.Put(b)
	return append(b, frame...)
}
