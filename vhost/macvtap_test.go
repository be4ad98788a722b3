package vhost_test

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/kvmm/kvmm/internal/netnstest"
	. "github.com/kvmm/kvmm/vhost"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// makeParent creates the macvtap parent in the test namespace: a dummy link
// where the kernel has the dummy driver, else one end of a veth pair (this
// workplace's kernel is built without CONFIG_DUMMY). It returns the parent's
// name and, for a veth, the peer's, and removes both when done is called.
func makeParent(t *testing.T) (parent, peer string, done func()) {
	t.Helper()
	d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "dum0"}}
	if err := netlink.LinkAdd(d); err == nil {
		if err := netlink.LinkSetUp(d); err != nil {
			t.Fatal(err)
		}
		return "dum0", "", func() { netlink.LinkDel(d) }
	}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"}, PeerName: "veth1"}
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatalf("neither dummy nor veth links can be created: %v", err)
	}
	for _, n := range []string{"veth0", "veth1"} {
		l, err := netlink.LinkByName(n)
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("%s up: %v", n, err)
		}
	}
	return "veth0", "veth1", func() { netlink.LinkDel(v) }
}

func TestMacvtapCreatedOpenedRemoved(t *testing.T) {
	netnstest.Run(t, func() {
		parent, _, done := makeParent(t)
		defer done()
		mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
		tap, err := OpenMacvtap(MacvtapOptions{Parent: parent, Queues: 2, MAC: mac})
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		if tap.Kind() != KindMacvtap || !tap.Created() || !strings.HasPrefix(tap.Name(), MacvtapNamePrefix) {
			t.Errorf("kind %s created %v name %s", tap.Kind(), tap.Created(), tap.Name())
		}
		l, err := netlink.LinkByName(tap.Name())
		if err != nil {
			t.Fatal(err)
		}
		mv, ok := l.(*netlink.Macvtap)
		if !ok {
			t.Fatalf("%s is a %s, want macvtap", tap.Name(), l.Type())
		}
		pl, _ := netlink.LinkByName(parent)
		if mv.ParentIndex != pl.Attrs().Index || mv.Mode != netlink.MACVLAN_MODE_BRIDGE {
			t.Errorf("parent %d mode %v, want %d bridge", mv.ParentIndex, mv.Mode, pl.Attrs().Index)
		}
		if mv.TxQLen <= 0 {
			// macvtap sizes each queue's receive ring by it; 0 drops every frame.
			t.Errorf("macvtap txqueuelen %d, want the driver default", mv.TxQLen)
		}
		if !bytes.Equal(mv.HardwareAddr, mac) || !bytes.Equal(tap.MAC(), mac) {
			t.Errorf("link MAC %v, Tap.MAC %v, want %v", mv.HardwareAddr, tap.MAC(), mac)
		}
		node := fmt.Sprintf("/dev/tap%d", tap.IfIndex())
		st, err := os.Stat(node)
		if err != nil || st.Mode()&os.ModeCharDevice == 0 {
			t.Fatalf("%s: %v %v", node, err, st)
		}
		if len(tap.Queues()) != 2 {
			t.Fatalf("%d queues, want 2", len(tap.Queues()))
		}
		checkVnetHdr(t, tap)
		if err := tap.SetOffload(1<<FeatureNetGuestCsum | 1<<FeatureNetGuestTSO4 | 1<<FeatureNetGuestTSO6); err != nil {
			t.Errorf("SetOffload: %v", err)
		}
		if err := tap.SetActiveQueues(1); err != nil {
			t.Errorf("SetActiveQueues(1): %v", err)
		}
		if err := tap.SetActiveQueues(2); err != nil {
			t.Errorf("SetActiveQueues(2): %v", err)
		}
		name := tap.Name()
		if err := tap.Close(); err != nil {
			t.Fatal(err)
		}
		if linkExists(t, name) {
			t.Errorf("%s still exists after Close", name)
		}
		if _, err := os.Stat(node); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Close: %v, want it gone", node, err)
		}
	})
}

func TestMacvtapModes(t *testing.T) {
	netnstest.Run(t, func() {
		parent, _, done := makeParent(t)
		defer done()
		for _, mode := range []string{MacvtapBridge, MacvtapVEPA, MacvtapPrivate, MacvtapPassthru} {
			tap, err := OpenMacvtap(MacvtapOptions{Parent: parent, Mode: mode})
			if err != nil {
				t.Errorf("mode %s: %v", mode, err)
				continue
			}
			if len(tap.MAC()) != 6 {
				t.Errorf("mode %s: kernel-chosen MAC %v", mode, tap.MAC())
			}
			name := tap.Name()
			tap.Close()
			if linkExists(t, name) {
				t.Errorf("mode %s: %s left behind", mode, name)
			}
		}
		if _, err := OpenMacvtap(MacvtapOptions{Parent: parent, Mode: "source"}); err == nil {
			t.Error("mode source accepted")
		}
	})
}

func TestMacvtapTwoOnOneParent(t *testing.T) {
	netnstest.Run(t, func() {
		parent, _, done := makeParent(t)
		defer done()
		a, err := OpenMacvtap(MacvtapOptions{Parent: parent})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := OpenMacvtap(MacvtapOptions{Parent: parent})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if a.Name() == b.Name() || a.IfIndex() == b.IfIndex() {
			t.Errorf("two macvtaps share %s/%d and %s/%d", a.Name(), a.IfIndex(), b.Name(), b.IfIndex())
		}
	})
}

func TestMacvtapErrors(t *testing.T) {
	netnstest.Run(t, func() {
		var c Cleanup
		if _, err := OpenMacvtap(MacvtapOptions{Parent: "nosuch0", Cleanup: &c}); err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("missing parent: %v", err)
		}
		parent, _, done := makeParent(t)
		defer done()
		// The kernel refuses a multicast MAC after nothing was created.
		if _, err := OpenMacvtap(MacvtapOptions{Parent: parent, MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}, Cleanup: &c}); err == nil {
			t.Error("multicast MAC accepted")
		}
		links, _ := netlink.LinkList()
		for _, l := range links {
			if l.Type() == "macvtap" {
				t.Errorf("%s left behind by a failed open", l.Attrs().Name)
			}
		}
		if err := c.Run(); err != nil {
			t.Errorf("Cleanup.Run after failed opens: %v", err)
		}
		// A macvtap persists unless deleted: the VM's Cleanup must do it.
		var vm Cleanup
		tap, err := OpenMacvtap(MacvtapOptions{Parent: parent, Cleanup: &vm})
		if err != nil {
			t.Fatal(err)
		}
		if err := vm.Run(); err != nil {
			t.Fatal(err)
		}
		if linkExists(t, tap.Name()) {
			t.Errorf("%s survived Cleanup.Run", tap.Name())
		}
	})
}

// OpenMacvtapQueue refuses a /dev/tapN that belongs to another link.
func TestMacvtapNodeIdentityChecked(t *testing.T) {
	netnstest.Run(t, func() {
		parent, _, done := makeParent(t)
		defer done()
		tap, err := OpenMacvtap(MacvtapOptions{Parent: parent})
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		path := fmt.Sprintf("/dev/tap%d", tap.IfIndex())
		q, err := OpenMacvtapQueue(path, tap.Name(), tap.MAC())
		if err != nil {
			t.Fatalf("own node: %v", err)
		}
		q.CloseFile()
		other := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
		if _, err := OpenMacvtapQueue(path, tap.Name(), other); err == nil || !strings.Contains(err.Error(), "belongs to") {
			t.Errorf("node with another MAC: %v", err)
		}
		if _, err := OpenMacvtapQueue(path, "kvmmvt99", tap.MAC()); err == nil {
			t.Error("node with another name accepted")
		}
		if _, err := OpenMacvtapQueue("/dev/null", tap.Name(), tap.MAC()); !errors.Is(err, unix.ENOTTY) {
			t.Errorf("/dev/null: %v, want ENOTTY from TUNGETIFF", err)
		}
	})
}
