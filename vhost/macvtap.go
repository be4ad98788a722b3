package vhost

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// macvtapNamePrefix names the macvtap links kvmm creates: kvmmvt0, kvmmvt1...
const macvtapNamePrefix = "kvmmvt"

// macvtapNodeWait bounds the wait for /dev/tapN: devtmpfs creates it with
// the link, but where udev creates it the node appears a little later
// (libvirt waits the same way).
const macvtapNodeWait = 2 * time.Second

// MacvtapOptions selects a macvtap.
type MacvtapOptions struct {
	// Parent is the host interface the macvtap sits on.
	Parent string
	// Mode is MacvtapBridge (the default for ""), MacvtapVEPA,
	// MacvtapPrivate or MacvtapPassthru.
	Mode string
	// Queues is the number of queue fds; 0 means 1. Every open of the
	// character device adds a queue, so no flag is needed for several.
	Queues int
	// MAC is the link's, and so the guest's, address; nil lets the kernel
	// pick one, which Tap.MAC returns.
	MAC net.HardwareAddr
	// Cleanup, if set, gets the Tap's Close before the link is created: a
	// macvtap outlives the process unless deleted.
	Cleanup *Cleanup
	Log     *slog.Logger
}

func macvlanMode(mode string) (netlink.MacvlanMode, error) {
	switch mode {
	case "", MacvtapBridge:
		return netlink.MACVLAN_MODE_BRIDGE, nil
	case MacvtapVEPA:
		return netlink.MACVLAN_MODE_VEPA, nil
	case MacvtapPrivate:
		return netlink.MACVLAN_MODE_PRIVATE, nil
	case MacvtapPassthru:
		return netlink.MACVLAN_MODE_PASSTHRU, nil
	}
	return 0, fmt.Errorf("macvtap mode %q: want bridge, vepa, private or passthru", mode)
}

// OpenMacvtap creates a macvtap on opts.Parent through netlink, brings it
// up, opens its character device /dev/tapN (N = ifindex) once per queue
// and configures each queue like a tap's (IFF_VNET_HDR, TUNSETVNETHDRSZ 12,
// TUNSETOFFLOAD 0). Close deletes the link. On error everything it did is
// undone.
func OpenMacvtap(opts MacvtapOptions) (*Tap, error) {
	queues, err := queueCount(opts.Queues)
	if err != nil {
		return nil, fmt.Errorf("macvtap: %w", err)
	}
	mode, err := macvlanMode(opts.Mode)
	if err != nil {
		return nil, err
	}
	if opts.MAC != nil && len(opts.MAC) != 6 {
		return nil, fmt.Errorf("macvtap: MAC %v is not a 6-byte Ethernet address", opts.MAC)
	}
	parent, err := netlink.LinkByName(opts.Parent)
	if err != nil {
		return nil, fmt.Errorf("macvtap: parent %q: %w", opts.Parent, err)
	}
	t := &Tap{kind: KindMacvtap, log: orDiscard(opts.Log), master: -1}
	if opts.Cleanup != nil {
		opts.Cleanup.Add(t.Close)
	}
	name, ifindex, err := createMacvtap(parent.Attrs().Index, opts.Parent, mode, opts.MAC)
	if err != nil {
		return nil, err
	}
	if err := t.adopt(nil, true, name, ifindex); err != nil {
		return nil, errors.Join(err, t.Close())
	}
	if err := t.finishMacvtap(queues); err != nil {
		return nil, errors.Join(err, t.Close())
	}
	t.log.Info("macvtap ready", "name", t.name, "ifindex", t.ifindex, "parent", opts.Parent,
		"mode", opts.Mode, "mac", t.mac.String(), "queues", queues)
	return t, nil
}

// createMacvtap picks the first free kvmmvtN name. Unlike tun, rtnetlink
// would accept a kvmmvt%d template but not report the name it chose.
func createMacvtap(parentIndex int, parentName string, mode netlink.MacvlanMode, mac net.HardwareAddr) (string, int, error) {
	for n := 0; n < 1000; n++ {
		name := fmt.Sprintf("%s%d", macvtapNamePrefix, n)
		if _, err := netlink.LinkByName(name); err == nil {
			continue
		} else if !isNotFound(err) {
			return "", 0, fmt.Errorf("macvtap: look up %s: %w", name, err)
		}
		// NewLinkAttrs, not a LinkAttrs literal: its TxQLen of -1 leaves
		// the queue length to the driver, while a literal's 0 is sent as
		// IFLA_TXQLEN 0, and macvtap sizes each queue's receive ring by
		// it: every frame to the guest would be dropped.
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.ParentIndex, attrs.HardwareAddr = name, parentIndex, mac
		mv := &netlink.Macvtap{Macvlan: netlink.Macvlan{LinkAttrs: attrs, Mode: mode}}
		err := netlink.LinkAdd(mv)
		if errors.Is(err, unix.EEXIST) {
			if _, lerr := netlink.LinkByName(name); lerr == nil {
				continue // another process took the name first
			}
		}
		if err != nil {
			return "", 0, fmt.Errorf("macvtap: create %s on %s: %w", name, parentName, err)
		}
		if mv.Index == 0 {
			// Created but not found again: delete by name is all we can do.
			netlink.LinkDel(mv)
			return "", 0, fmt.Errorf("macvtap: created %s but cannot find its ifindex", name)
		}
		return name, mv.Index, nil
	}
	return "", 0, fmt.Errorf("macvtap: no free %sN name", macvtapNamePrefix)
}

func (t *Tap) finishMacvtap(queues int) error {
	link, err := netlink.LinkByIndex(t.ifindex)
	if err != nil {
		return fmt.Errorf("macvtap %s: %w", t.name, err)
	}
	mac := link.Attrs().HardwareAddr
	t.mu.Lock()
	t.mac = mac
	t.mu.Unlock()
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("macvtap %s: link up: %w", t.name, err)
	}
	path := fmt.Sprintf("/dev/tap%d", t.ifindex)
	if err := waitNode(path, macvtapNodeWait); err != nil {
		return fmt.Errorf("macvtap %s: %w", t.name, err)
	}
	for i := 0; i < queues; i++ {
		q, err := openMacvtapQueue(path, t.name, mac)
		if err != nil {
			return fmt.Errorf("macvtap %s queue %d: %w", t.name, i, err)
		}
		if err := t.adopt([]*Queue{q}, false, t.name, 0); err != nil {
			return err
		}
	}
	return t.configureQueues()
}

func waitNode(path string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		_, err := os.Stat(path)
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return fmt.Errorf("character device %s did not appear (no devtmpfs or udev?): %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openMacvtapQueue opens one queue of a macvtap's character device and
// checks it is the link kvmm created: /dev/tapN is named after the ifindex,
// which is only unique within a network namespace, so a node made by a
// macvtap in another namespace could carry the same name. The link name and
// its random MAC together identify ours.
func openMacvtapQueue(path, name string, mac net.HardwareAddr) (*Queue, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	req := newIfreq("", 0)
	if err := ioctlPtr(fd, ioctlTunGetIff, unsafe.Pointer(&req)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: TUNGETIFF: %w", path, err)
	}
	hw := newIfreq("", 0)
	if err := ioctlPtr(fd, ioctlSiocGIfHwAddr, unsafe.Pointer(&hw)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: SIOCGIFHWADDR: %w", path, err)
	}
	if req.name() != name || !bytes.Equal(hw.hwAddr(), mac) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s belongs to %s (%v), not to %s (%v): another network namespace has a macvtap with the same ifindex",
			path, req.name(), net.HardwareAddr(hw.hwAddr()), name, mac)
	}
	// The flags are the driver's default, set explicitly so the vnet
	// header does not depend on it (drivers/net/tap.c accepts exactly
	// IFF_TAP|IFF_NO_PI plus IFF_VNET_HDR/IFF_MULTI_QUEUE here).
	set := newIfreq("", iffTap|iffNoPI|iffVnetHdr)
	if err := ioctlPtr(fd, ioctlTunSetIff, unsafe.Pointer(&set)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: TUNSETIFF IFF_TAP|IFF_NO_PI|IFF_VNET_HDR: %w", path, err)
	}
	return newQueue(fd, path)
}
