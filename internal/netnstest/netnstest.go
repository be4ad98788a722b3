// Package netnstest runs tests that need real network interfaces (taps,
// macvtaps) inside a network namespace of their own, so that nothing they
// create or send reaches the host's network, and gives them the host's
// view of an interface: an AF_PACKET socket bound to it, which sees every
// frame the interface receives and can send frames out of it.
package netnstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/vhost"
)

// Require skips tb unless it can create network namespaces and taps.
func Require(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces and taps")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		tb.Skipf("needs /dev/net/tun: %v", err)
	}
}

// Run runs fn on this goroutine's OS thread switched into a fresh, unnamed
// network namespace with lo up and IPv6 off (no link-local chatter on the
// test's interfaces), and switches back afterwards. Links fn creates live
// in the namespace and die with it. Only this thread is in the namespace:
// fn must create namespace-bound things (links, packet sockets, child
// processes) itself, and close them itself (defer inside fn).
func Run(tb testing.TB, fn func()) {
	tb.Helper()
	Require(tb)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("current netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		tb.Fatalf("new netns: %v", err)
	}
	defer func() {
		// Back to the original namespace before anything else; if that
		// fails the thread stays locked, and the runtime kills it with
		// the goroutine instead of reusing it.
		if err := netns.Set(orig); err != nil {
			tb.Errorf("restore netns: %v", err)
			return
		}
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	}()
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		tb.Fatalf("lo up in the test netns: %v", err)
	}
	// /proc/sys/net is the namespace of the thread that opens it.
	for _, f := range []string{"all", "default"} {
		p := "/proc/sys/net/ipv6/conf/" + f + "/disable_ipv6"
		if err := os.WriteFile(p, []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			tb.Fatalf("%s: %v", p, err)
		}
	}
	fn()
}

// Go runs fn in a new goroutine whose thread is in the calling thread's
// network namespace (inside Run: the test's), so the child processes fn
// starts (QEMU with a tap) live there too. The channel is closed when fn
// has returned.
func Go(tb testing.TB, fn func()) <-chan struct{} {
	tb.Helper()
	ns, err := netns.Get()
	if err != nil {
		tb.Fatalf("current netns: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer ns.Close()
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			tb.Errorf("current netns: %v", err)
			return // the locked thread dies with the goroutine
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			tb.Errorf("enter the test netns: %v", err)
			return
		}
		fn()
		if err := netns.Set(orig); err != nil {
			tb.Errorf("restore netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	return done
}

// PersistentTap creates a tap that outlives its creator's file descriptors
// (for a VMM that opens it by name, as QEMU's -netdev tap,ifname= does),
// and up, in the calling thread's namespace. remove deletes it; call it in
// the same namespace (inside Run).
func PersistentTap(tb testing.TB, name string) (ifindex int, remove func()) {
	tb.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	tt := &netlink.Tuntap{LinkAttrs: attrs, Mode: netlink.TUNTAP_MODE_TAP,
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
	if err := netlink.LinkAdd(tt); err != nil {
		tb.Fatalf("create tap %s: %v", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		tb.Fatalf("tap %s up: %v", name, err)
	}
	return link.Attrs().Index, func() {
		if err := netlink.LinkDel(link); err != nil {
			tb.Errorf("delete tap %s: %v", name, err)
		}
	}
}

// EtherTypeTest is IEEE's local experimental EtherType: no stack handles
// it, so test frames go nowhere but where the test looks.
const EtherTypeTest = 0x88B5

// Frame is an Ethernet frame of n bytes (at least 15) to dst from src with
// EtherTypeTest; its first payload byte is marker, the rest a pattern.
func Frame(dst, src [6]byte, n int, marker byte) []byte {
	f := make([]byte, n)
	copy(f[0:], dst[:])
	copy(f[6:], src[:])
	binary.BigEndian.PutUint16(f[12:], EtherTypeTest)
	f[14] = marker
	for i := 15; i < n; i++ {
		f[i] = byte(i) ^ marker
	}
	return f
}

// IsTestFrame reports whether f is a Frame with this marker.
func IsTestFrame(f []byte, marker byte) bool {
	return len(f) > 14 && binary.BigEndian.Uint16(f[12:]) == EtherTypeTest && f[14] == marker
}

// Header sizes of the TCP frames below.
const (
	ethHdrLen  = 14
	ipv4HdrLen = 20
	tcpHdrLen  = 20
)

// TCPv4GSO builds one IPv4/TCP super-frame of payloadLen bytes to be cut
// into mss-byte segments, its checksum left partial (the pseudo-header
// sum, as Linux leaves it for CHECKSUM_PARTIAL), and the vnet header that
// asks for segmentation (TSO).
func TCPv4GSO(dst, src [6]byte, payloadLen, mss int) ([]byte, vhost.VnetHdr) {
	ipA, ipB := []byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}
	l4len := tcpHdrLen + payloadLen
	f := make([]byte, ethHdrLen+ipv4HdrLen+l4len)
	copy(f[0:], dst[:])
	copy(f[6:], src[:])
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[ethHdrLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(ipv4HdrLen+l4len))
	ip[8], ip[9] = 64, unix.IPPROTO_TCP
	copy(ip[12:], ipA)
	copy(ip[16:], ipB)
	binary.BigEndian.PutUint16(ip[10:], ^csumFold(csumAdd(0, ip[:ipv4HdrLen])))
	tcp := ip[ipv4HdrLen:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 9)
	binary.BigEndian.PutUint32(tcp[4:], 1000)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12], tcp[13] = 5<<4, 0x18 // data offset, PSH|ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	pseudo := csumAdd(csumAdd(0, ipA), ipB) + unix.IPPROTO_TCP + uint32(l4len)
	binary.BigEndian.PutUint16(tcp[16:], csumFold(pseudo))
	for i := range payloadLen {
		tcp[tcpHdrLen+i] = byte(i)
	}
	return f, vhost.VnetHdr{
		Flags: vhost.VnetHdrFNeedsCsum, GSOType: vhost.VnetHdrGSOTCPv4,
		HdrLen: ethHdrLen + ipv4HdrLen + tcpHdrLen, GSOSize: uint16(mss),
		CsumStart: ethHdrLen + ipv4HdrLen, CsumOffset: 16,
	}
}

// IsTCPv4 reports whether f is an IPv4 TCP frame.
func IsTCPv4(f []byte) bool {
	return len(f) > ethHdrLen+ipv4HdrLen && binary.BigEndian.Uint16(f[12:]) == 0x0800 && f[ethHdrLen+9] == unix.IPPROTO_TCP
}

func csumAdd(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// PacketSocket is an AF_PACKET socket bound to one interface: the host's
// side of it.
type PacketSocket struct {
	fd      int
	ifindex int
	vnetHdr bool
}

// virtioNetHdrLen is the header PACKET_VNET_HDR adds (struct
// virtio_net_hdr, without num_buffers).
const virtioNetHdrLen = 10

// OpenPacket binds a packet socket to ifindex in the calling thread's
// namespace. With vnetHdr every frame sent and received carries a virtio
// header (PACKET_VNET_HDR): checksum and segmentation offloads.
func OpenPacket(tb testing.TB, ifindex int, vnetHdr bool) *PacketSocket {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		tb.Fatalf("packet socket: %v", err)
	}
	if vnetHdr {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			unix.Close(fd)
			tb.Fatalf("PACKET_VNET_HDR: %v", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		tb.Fatalf("bind packet socket to ifindex %d: %v", ifindex, err)
	}
	return &PacketSocket{fd: fd, ifindex: ifindex, vnetHdr: vnetHdr}
}

// Close closes the socket.
func (p *PacketSocket) Close() error { return unix.Close(p.fd) }

// Send transmits frame out of the interface (to whoever reads the tap),
// with hdr in front when the socket has PACKET_VNET_HDR.
func (p *PacketSocket) Send(frame []byte, hdr vhost.VnetHdr) error {
	buf := frame
	if p.vnetHdr {
		h := make([]byte, vhost.TapVnetHdrLen)
		hdr.Put(h)
		buf = append(h[:virtioNetHdrLen], frame...)
	}
	sa := &unix.SockaddrLinklayer{Ifindex: p.ifindex, Protocol: htons(binary.BigEndian.Uint16(frame[12:]))}
	if err := unix.Sendto(p.fd, buf, 0, sa); err != nil {
		return fmt.Errorf("packet socket send: %w", err)
	}
	return nil
}

// Recv returns the next frame the interface received (from whoever
// writes the tap) that match accepts, waiting at most timeout.
func (p *PacketSocket) Recv(timeout time.Duration, match func([]byte) bool) (vhost.VnetHdr, []byte, error) {
	buf := make([]byte, 65536+virtioNetHdrLen+64)
	end := time.Now().Add(timeout)
	for {
		left := time.Until(end)
		if left <= 0 {
			return vhost.VnetHdr{}, nil, os.ErrDeadlineExceeded
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return vhost.VnetHdr{}, nil, err
		}
		n, from, err := unix.Recvfrom(p.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return vhost.VnetHdr{}, nil, fmt.Errorf("packet socket recv: %w", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		b := buf[:n]
		var hdr vhost.VnetHdr
		if p.vnetHdr {
			var h [vhost.TapVnetHdrLen]byte
			copy(h[:], b[:virtioNetHdrLen])
			hdr, _ = vhost.ParseVnetHdr(h[:])
			b = b[virtioNetHdrLen:]
		}
		if match(b) {
			return hdr, append([]byte(nil), b...), nil
		}
	}
}
