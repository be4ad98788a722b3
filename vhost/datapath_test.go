package vhost_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/kvmm/kvmm/internal/netnstest"
	. "github.com/kvmm/kvmm/vhost"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The data path a userspace virtio-net backend uses: frames with a 12-byte
// vnet header written to and read from tap queues, checked against what the
// host stack sees through a packet socket on the same interface.

// Guest transmit: what is written to the tap queue arrives at the host as
// the frame after the header, with the header's checksum and segmentation
// requests understood (PACKET_VNET_HDR shows them as the kernel holds them).
func TestTapWriteReachesHost(t *testing.T) {
	netnstest.Run(t, func() {
		tap, err := OpenTap(TapOptions{Name: TapAuto})
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		ps := openPacketSock(t, tap.IfIndex(), true)
		defer ps.Close()
		q := tap.Queues()[0]

		plain := testFrame(macB, macA, 100, 0x5a)
		if _, err := q.Write(withHdr(VnetHdr{}, plain)); err != nil {
			t.Fatal(err)
		}
		hdr, got := recv(t, ps, func(f []byte) bool { return isTestFrame(f, 0x5a) })
		if !bytes.Equal(got, plain) {
			t.Errorf("plain frame arrived as % x, want % x", got, plain)
		}
		if hdr.Flags != 0 || hdr.GSOType != VnetHdrGSONone {
			t.Errorf("plain frame header %+v, want none", hdr)
		}

		udp, uh := udpFrame(5000, []byte("partial checksum"))
		if _, err := q.Write(withHdr(uh, udp)); err != nil {
			t.Fatal(err)
		}
		hdr, got = recv(t, ps, func(f []byte) bool { return isIPv4Proto(f, unix.IPPROTO_UDP) })
		if !bytes.Equal(got, udp) {
			t.Errorf("UDP frame changed on the way")
		}
		if hdr.Flags&VnetHdrFNeedsCsum == 0 || hdr.CsumStart != uh.CsumStart || hdr.CsumOffset != uh.CsumOffset {
			t.Errorf("UDP header %+v, want NEEDS_CSUM start %d offset %d", hdr, uh.CsumStart, uh.CsumOffset)
		}

		// A TSO super-frame goes in as one write and stays one GSO packet:
		// the host-side offloads (HOST_TSO4) need no TUNSETOFFLOAD.
		tcp, th := tcpGSOFrame(3000, 1000)
		if _, err := q.Write(withHdr(th, tcp)); err != nil {
			t.Fatal(err)
		}
		hdr, got = recv(t, ps, func(f []byte) bool { return isIPv4Proto(f, unix.IPPROTO_TCP) })
		if len(got) != len(tcp) || hdr.GSOType != VnetHdrGSOTCPv4 || hdr.GSOSize != 1000 {
			t.Errorf("TSO frame arrived as %d bytes, header %+v; want %d bytes, TCPv4 gso 1000", len(got), hdr, len(tcp))
		}

		// The tap parses the header: one that points the checksum outside
		// the frame is refused.
		bad := VnetHdr{Flags: VnetHdrFNeedsCsum, CsumStart: 1000, CsumOffset: 6}
		if _, err := q.Write(withHdr(bad, plain)); !errors.Is(err, unix.EINVAL) {
			t.Errorf("write with an out-of-frame checksum: %v, want EINVAL", err)
		}
	})
}

// Guest receive: a frame the host sends out of the tap is read from the
// queue behind a 12-byte header, so TUNSETVNETHDRSZ took effect (with the
// default 10 the frame would start two bytes early).
func TestTapReadFromHost(t *testing.T) {
	netnstest.Run(t, func() {
		tap, err := OpenTap(TapOptions{Name: TapAuto})
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		ps := openPacketSock(t, tap.IfIndex(), false)
		defer ps.Close()
		for i, size := range []int{60, 1514} {
			marker := byte(0x70 + i)
			f := testFrame(macA, macB, size, marker)
			send(t, ps, f, VnetHdr{})
			hdrs, frames := readQueue(t, tap.Queues()[0], 2*time.Second, 1, func(b []byte) bool { return isTestFrame(b, marker) })
			if len(frames) != 1 {
				t.Fatalf("size %d: no frame read from the tap", size)
			}
			if !bytes.Equal(frames[0], f) {
				t.Errorf("size %d: read % x..., want % x...", size, frames[0][:16], f[:16])
			}
			if hdrs[0].Flags != 0 || hdrs[0].GSOType != 0 {
				t.Errorf("size %d: header %+v, want empty", size, hdrs[0])
			}
		}
	})
}

// The offloads set with SetOffload change what the guest receives: without
// them the host completes checksums and segments in software; with them the
// guest gets partial checksums and GSO frames, exactly what GUEST_CSUM and
// GUEST_TSO4 promise the driver.
func TestTapOffloadsOnTheWire(t *testing.T) {
	netnstest.Run(t, func() {
		tap, err := OpenTap(TapOptions{Name: TapAuto})
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		ps := openPacketSock(t, tap.IfIndex(), true)
		defer ps.Close()
		q := tap.Queues()[0]
		isUDP := func(b []byte) bool { return isIPv4Proto(b, unix.IPPROTO_UDP) }
		isTCP := func(b []byte) bool { return isIPv4Proto(b, unix.IPPROTO_TCP) }
		udp, uh := udpFrame(6000, []byte("checksum me"))
		tcp, th := tcpGSOFrame(3000, 1000)

		// Offloads off (as opened): complete checksums, segmented TCP.
		send(t, ps, udp, uh)
		hdrs, frames := readQueue(t, q, 2*time.Second, 1, isUDP)
		if len(frames) != 1 || hdrs[0].Flags&VnetHdrFNeedsCsum != 0 || !l4ChecksumOK(frames[0]) {
			t.Errorf("no offloads: UDP header %+v checksum ok %v, want a complete checksum", hdrs, len(frames) == 1 && l4ChecksumOK(frames[0]))
		}
		send(t, ps, tcp, th)
		hdrs, frames = readQueue(t, q, 2*time.Second, 3, isTCP)
		if len(frames) != 3 {
			t.Fatalf("no offloads: TSO frame read as %d frames, want 3 segments", len(frames))
		}
		for i, f := range frames {
			if len(f) != 54+1000 || hdrs[i].GSOType != 0 || !l4ChecksumOK(f) {
				t.Errorf("no offloads: segment %d: %d bytes header %+v checksum ok %v", i, len(f), hdrs[i], l4ChecksumOK(f))
			}
		}

		// GUEST_CSUM: the checksum stays partial for the guest to finish.
		if err := tap.SetOffload(1 << FeatureNetGuestCsum); err != nil {
			t.Fatal(err)
		}
		send(t, ps, udp, uh)
		hdrs, frames = readQueue(t, q, 2*time.Second, 1, isUDP)
		if len(frames) != 1 || hdrs[0].Flags&VnetHdrFNeedsCsum == 0 || hdrs[0].CsumStart != uh.CsumStart || hdrs[0].CsumOffset != uh.CsumOffset {
			t.Errorf("GUEST_CSUM: UDP header %+v, want NEEDS_CSUM %d/%d", hdrs, uh.CsumStart, uh.CsumOffset)
		}

		// GUEST_CSUM|GUEST_TSO4: the super-frame reaches the guest whole.
		if err := tap.SetOffload(1<<FeatureNetGuestCsum | 1<<FeatureNetGuestTSO4); err != nil {
			t.Fatal(err)
		}
		send(t, ps, tcp, th)
		hdrs, frames = readQueue(t, q, 2*time.Second, 1, isTCP)
		if len(frames) != 1 || len(frames[0]) != len(tcp) || hdrs[0].GSOType != VnetHdrGSOTCPv4 || hdrs[0].GSOSize != 1000 {
			t.Errorf("GUEST_TSO4: read %d frames, header %+v; want one %d-byte TCPv4 GSO frame", len(frames), hdrs, len(tcp))
		}
	})
}

// TUNSETQUEUE steering: with two queues attached the host spreads flows
// over both; with one detached (SetActiveQueues(1)) everything lands on
// queue 0.
func TestTapMultiQueueSteering(t *testing.T) {
	netnstest.Run(t, func() {
		tap, err := OpenTap(TapOptions{Name: TapAuto, Queues: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		ps := openPacketSock(t, tap.IfIndex(), false)
		defer ps.Close()
		const flows = 64
		send := func() {
			for i := 0; i < flows; i++ {
				f, _ := udpFrame(uint16(20000+i), []byte("flow"))
				// A complete checksum: this socket sends no vnet header.
				binary.BigEndian.PutUint16(f[ethHdrLen+ipv4HdrLen+6:], 0)
				send(t, ps, f, VnetHdr{})
			}
		}
		count := func(q *Queue, wait time.Duration) int {
			_, frames := readQueue(t, q, wait, flows, func(b []byte) bool { return isIPv4Proto(b, unix.IPPROTO_UDP) })
			return len(frames)
		}
		send()
		n0, n1 := count(tap.Queues()[0], 500*time.Millisecond), count(tap.Queues()[1], 500*time.Millisecond)
		if n0+n1 != flows || n0 == 0 || n1 == 0 {
			t.Errorf("two queues: %d + %d frames, want %d spread over both", n0, n1, flows)
		}
		if err := tap.SetActiveQueues(1); err != nil {
			t.Fatal(err)
		}
		send()
		n0, n1 = count(tap.Queues()[0], time.Second), count(tap.Queues()[1], 200*time.Millisecond)
		if n0 != flows || n1 != 0 {
			t.Errorf("queue 1 detached: %d + %d frames, want %d + 0", n0, n1, flows)
		}
	})
}

// A macvtap carries the same frames: a frame addressed to its MAC arrives
// on the parent from the wire (the veth peer) and is read from the queue,
// and a frame written to the queue leaves through the parent.
func TestMacvtapFrames(t *testing.T) {
	netnstest.Run(t, func() {
		parent, peer, done := makeParent(t)
		defer done()
		if peer == "" {
			t.Skip("parent is a dummy link, which has no wire to send from")
		}
		tap, err := OpenMacvtap(MacvtapOptions{Parent: parent, MAC: macA})
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		pl, err := netlink.LinkByName(peer)
		if err != nil {
			t.Fatal(err)
		}
		ps := openPacketSock(t, pl.Attrs().Index, false)
		defer ps.Close()
		q := tap.Queues()[0]

		in := testFrame(macA, macB, 200, 0x33)
		send(t, ps, in, VnetHdr{})
		_, frames := readQueue(t, q, 2*time.Second, 1, func(b []byte) bool { return isTestFrame(b, 0x33) })
		if len(frames) != 1 || !bytes.Equal(frames[0], in) {
			t.Fatalf("frame to the macvtap's MAC: read %d frames", len(frames))
		}

		out := testFrame(macB, macA, 200, 0x44)
		if _, err := q.Write(withHdr(VnetHdr{}, out)); err != nil {
			t.Fatal(err)
		}
		_, got := recv(t, ps, func(b []byte) bool { return isTestFrame(b, 0x44) })
		if !bytes.Equal(got, out) {
			t.Errorf("frame written to the macvtap arrived as % x...", got[:16])
		}
	})
}
