package guesttest

import (
	"bytes"
	"fmt"
	"time"

	"github.com/kvmm/kvmm/internal/netnstest"
	"github.com/kvmm/kvmm/vhost"
)

// The wire protocol of testdata/guests/virtionet.S, which a test plays the
// host's side of, under QEMU and under kvmm alike.
const (
	// NetGuestMAC is the MAC the VMM must give the guest's NIC.
	NetGuestMAC = "52:54:00:12:34:56"
	// NetBenchFrames is how many frames `virtionet.bench` sends.
	NetBenchFrames = 2000
)

var (
	netGuestMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	netHostMAC  = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	broadcast   = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

// NetExchange is the host's side of virtionet on the guest's tap (ps, a
// packet socket on it): it waits for the guest's broadcast frame (marker
// 0x5a) and checks every byte, answers with the 100-byte frame the guest
// expects (to its MAC, marker 0xa5), and waits for the frame the guest
// sends after resetting and setting up the device again (marker 0x5b).
func NetExchange(ps *netnstest.PacketSocket, timeout time.Duration) error {
	_, got, err := ps.Recv(timeout, func(f []byte) bool { return netnstest.IsTestFrame(f, 0x5a) })
	if err != nil {
		return fmt.Errorf("virtionet: the guest's first frame: %w", err)
	}
	if want := netnstest.Frame(broadcast, netGuestMAC, 64, 0x5a); !bytes.Equal(got, want) {
		return fmt.Errorf("virtionet: the guest's frame:\n got % x\nwant % x", got, want)
	}
	if err := ps.Send(netnstest.Frame(netGuestMAC, netHostMAC, 100, 0xa5), vhost.VnetHdr{}); err != nil {
		return fmt.Errorf("virtionet: %w", err)
	}
	if _, _, err := ps.Recv(timeout, func(f []byte) bool { return netnstest.IsTestFrame(f, 0x5b) }); err != nil {
		return fmt.Errorf("virtionet: the guest's frame after its reset: %w", err)
	}
	return nil
}
