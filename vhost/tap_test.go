package vhost_test

import (
	"errors"
	"github.com/kvmm/kvmm/internal/netnstest"
	. "github.com/kvmm/kvmm/vhost"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// These tests run against the real tun driver, inside a network namespace
// each test creates (inNetns), and skip without root or /dev/net/tun.

func tuntapLink(t *testing.T, name string) *netlink.Tuntap {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	tt, ok := l.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("%s is a %s, want tuntap", name, l.Type())
	}
	return tt
}

func checkVnetHdr(t *testing.T, tap *Tap) {
	t.Helper()
	for i, q := range tap.Queues() {
		n, err := q.VnetHdrSize()
		if err != nil {
			t.Fatalf("queue %d: %v", i, err)
		}
		if n != TapVnetHdrLen {
			t.Errorf("queue %d: TUNGETVNETHDRSZ = %d, want %d", i, n, TapVnetHdrLen)
		}
	}
}

func TestTapAutoCreatedAndRemoved(t *testing.T) {
	netnstest.Run(t, func() {
		tap, err := OpenTap(TapOptions{Name: TapAuto})
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		if !strings.HasPrefix(tap.Name(), "kvmm") || !tap.Created() || tap.Kind() != KindTap {
			t.Errorf("tap %q created=%v kind=%s, want kvmmN, created, tap", tap.Name(), tap.Created(), tap.Kind())
		}
		tt := tuntapLink(t, tap.Name())
		if tt.Mode != netlink.TUNTAP_MODE_TAP {
			t.Errorf("mode %v, want tap", tt.Mode)
		}
		if want := netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR; tt.Flags&want != want {
			t.Errorf("flags %#x, want NO_PI|VNET_HDR", tt.Flags)
		}
		if !tt.NonPersist {
			t.Error("auto tap is persistent; it would outlive a SIGKILLed kvmm")
		}
		if tt.Attrs().Flags&(1<<0) == 0 { // net.FlagUp
			t.Errorf("link not up: flags %v", tt.Attrs().Flags)
		}
		if len(tap.Queues()) != 1 || tap.FDs()[0] <= 0 {
			t.Errorf("queues %d, fds %v", len(tap.Queues()), tap.FDs())
		}
		checkVnetHdr(t, tap)
		name := tap.Name()
		if err := tap.Close(); err != nil {
			t.Fatal(err)
		}
		if linkExists(t, name) {
			t.Errorf("%s still exists after Close", name)
		}
		if err := tap.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

func TestTapAutoMultiQueue(t *testing.T) {
	netnstest.Run(t, func() {
		tap, err := OpenTap(TapOptions{Name: TapAuto, Queues: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		// One tap with four queues, not four taps (netlink's template bug).
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		var taps []string
		for _, l := range links {
			if l.Type() == "tuntap" {
				taps = append(taps, l.Attrs().Name)
			}
		}
		if len(taps) != 1 || taps[0] != tap.Name() {
			t.Fatalf("tuntap links %v, want only %s", taps, tap.Name())
		}
		tt := tuntapLink(t, tap.Name())
		if tt.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 || tt.Queues != 4 {
			t.Fatalf("flags %#x queues %d, want multi_queue with 4", tt.Flags, tt.Queues)
		}
		fds := map[int]bool{}
		for _, fd := range tap.FDs() {
			fds[fd] = true
		}
		if len(fds) != 4 {
			t.Errorf("fds %v, want 4 distinct", tap.FDs())
		}
		checkVnetHdr(t, tap)

		// TUNSETQUEUE: detach queues 2 and 3, then attach them again.
		if err := tap.SetActiveQueues(2); err != nil {
			t.Fatal(err)
		}
		if tt := tuntapLink(t, tap.Name()); tt.Queues != 2 || tt.DisabledQueues != 2 {
			t.Errorf("after SetActiveQueues(2): %d queues, %d disabled; want 2, 2", tt.Queues, tt.DisabledQueues)
		}
		// Offloads and header size still apply with queues detached.
		if err := tap.SetOffload(1<<FeatureNetGuestCsum | 1<<FeatureNetGuestTSO4); err != nil {
			t.Errorf("SetOffload with detached queues: %v", err)
		}
		if err := tap.SetActiveQueues(4); err != nil {
			t.Fatal(err)
		}
		if tt := tuntapLink(t, tap.Name()); tt.Queues != 4 || tt.DisabledQueues != 0 {
			t.Errorf("after SetActiveQueues(4): %d queues, %d disabled; want 4, 0", tt.Queues, tt.DisabledQueues)
		}
		for _, n := range []int{0, 5} {
			if err := tap.SetActiveQueues(n); err == nil {
				t.Errorf("SetActiveQueues(%d) succeeded", n)
			}
		}
		name := tap.Name()
		tap.Close()
		if linkExists(t, name) {
			t.Errorf("%s still exists after Close", name)
		}
	})
}

// makePersistentTap creates a tap the way an administrator would (`ip
// tuntap add`): persistent, no process attached.
func makePersistentTap(t *testing.T, name string, multiQueue bool) {
	t.Helper()
	flags := netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR
	if multiQueue {
		flags |= netlink.TUNTAP_MULTI_QUEUE
	}
	// Queues 0: netlink closes its fds, the tap stays (persistent).
	tt := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP, Flags: flags}
	if err := netlink.LinkAdd(tt); err != nil {
		t.Fatalf("create persistent tap %s: %v", name, err)
	}
}

func TestTapExistingReusedNotRemoved(t *testing.T) {
	netnstest.Run(t, func() {
		makePersistentTap(t, "pre0", false)
		defer netlink.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "pre0"}})
		tap, err := OpenTap(TapOptions{Name: "pre0"})
		if err != nil {
			t.Fatal(err)
		}
		if tap.Created() || tap.Name() != "pre0" {
			t.Errorf("name %s created %v, want pre0 not created", tap.Name(), tap.Created())
		}
		checkVnetHdr(t, tap)
		// A single-queue tap serves one process: a second open is refused
		// with a message that says why.
		if _, err := OpenTap(TapOptions{Name: "pre0"}); err == nil || !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "in use") {
			t.Errorf("second open of a busy tap: %v, want EBUSY 'in use'", err)
		}
		if err := tap.Close(); err != nil {
			t.Fatal(err)
		}
		if !linkExists(t, "pre0") {
			t.Fatal("existing tap pre0 was removed by Close")
		}
		// And it can be used again.
		tap, err = OpenTap(TapOptions{Name: "pre0"})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		tap.Close()
	})
}

func TestTapExistingMultiQueue(t *testing.T) {
	netnstest.Run(t, func() {
		makePersistentTap(t, "mq0", true)
		makePersistentTap(t, "sq0", false)
		defer netlink.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "mq0"}})
		defer netlink.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "sq0"}})
		tap, err := OpenTap(TapOptions{Name: "mq0", Queues: 3})
		if err != nil {
			t.Fatal(err)
		}
		if tt := tuntapLink(t, "mq0"); tt.Queues != 3 {
			t.Errorf("mq0 has %d queues attached, want 3", tt.Queues)
		}
		tap.Close()
		if tt := tuntapLink(t, "mq0"); tt.Queues != 0 {
			t.Errorf("mq0 has %d queues attached after Close, want 0", tt.Queues)
		}
		// A multi-queue tap opened for one queue still needs the flag.
		tap, err = OpenTap(TapOptions{Name: "mq0"})
		if err != nil {
			t.Fatalf("one queue of a multi-queue tap: %v", err)
		}
		tap.Close()
		if _, err := OpenTap(TapOptions{Name: "sq0", Queues: 2}); err == nil || !strings.Contains(err.Error(), "multi_queue") {
			t.Errorf("2 queues on a single-queue tap: %v, want a multi_queue error", err)
		}
		if !linkExists(t, "sq0") || !linkExists(t, "mq0") {
			t.Error("an existing tap disappeared")
		}
	})
}

func TestTapByNameCreatedWhenMissing(t *testing.T) {
	netnstest.Run(t, func() {
		tap, err := OpenTap(TapOptions{Name: "guest0", Queues: 2})
		if err != nil {
			t.Fatal(err)
		}
		if !tap.Created() || tap.Name() != "guest0" {
			t.Errorf("name %s created %v", tap.Name(), tap.Created())
		}
		tap.Close()
		if linkExists(t, "guest0") {
			t.Error("guest0 still exists after Close")
		}
	})
}

func TestTapNameOfOtherKind(t *testing.T) {
	netnstest.Run(t, func() {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := netlink.LinkAdd(br); err != nil {
			t.Fatal(err)
		}
		defer netlink.LinkDel(br)
		if _, err := OpenTap(TapOptions{Name: "br0"}); err == nil || !strings.Contains(err.Error(), "not a tap") {
			t.Errorf("OpenTap on a bridge: %v", err)
		}
		tun := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tun0"}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI}
		if err := netlink.LinkAdd(tun); err != nil {
			t.Fatal(err)
		}
		defer netlink.LinkDel(tun)
		if _, err := OpenTap(TapOptions{Name: "tun0"}); err == nil || !strings.Contains(err.Error(), "tun (layer 3)") {
			t.Errorf("OpenTap on a tun: %v", err)
		}
		for _, bad := range []string{"has space", "way-too-long-name0", "a/b"} {
			if _, err := OpenTap(TapOptions{Name: bad}); err == nil {
				t.Errorf("OpenTap(%q) succeeded", bad)
			}
		}
		if _, err := OpenTap(TapOptions{Queues: MaxQueuePairs + 1}); err == nil {
			t.Error("257 queues accepted")
		}
	})
}

func makeBridge(t *testing.T, name string) *netlink.Bridge {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("create bridge %s: %v", name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatalf("bridge %s up: %v", name, err)
	}
	return br
}

func masterOf(t *testing.T, name string) int {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().MasterIndex
}

func TestTapBridgeAttach(t *testing.T) {
	netnstest.Run(t, func() {
		br := makeBridge(t, "kbr0")
		defer netlink.LinkDel(br)
		tap, err := OpenTap(TapOptions{Name: TapAuto, Bridge: "kbr0"})
		if err != nil {
			t.Fatal(err)
		}
		if m := masterOf(t, tap.Name()); m != br.Index {
			t.Errorf("%s master %d, want kbr0 (%d)", tap.Name(), m, br.Index)
		}
		tap.Close()

		// An existing tap joins the bridge and leaves it again on Close.
		makePersistentTap(t, "pre1", false)
		defer netlink.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "pre1"}})
		tap, err = OpenTap(TapOptions{Name: "pre1", Bridge: "kbr0"})
		if err != nil {
			t.Fatal(err)
		}
		if m := masterOf(t, "pre1"); m != br.Index {
			t.Errorf("pre1 master %d, want %d", m, br.Index)
		}
		if err := tap.Close(); err != nil {
			t.Fatal(err)
		}
		if m := masterOf(t, "pre1"); m != 0 {
			t.Errorf("pre1 master %d after Close, want none", m)
		}
	})
}

// A failure after the tap exists (here: the bridge is missing or is not a
// bridge) must leave nothing behind, and the VM's Cleanup that was handed
// the tap runs cleanly afterwards.
func TestTapErrorPathCleansUp(t *testing.T) {
	netnstest.Run(t, func() {
		var c Cleanup
		_, err := OpenTap(TapOptions{Name: TapAuto, Queues: 2, Bridge: "nosuchbr", Cleanup: &c})
		if err == nil || !strings.Contains(err.Error(), "nosuchbr") {
			t.Fatalf("missing bridge: %v", err)
		}
		links, _ := netlink.LinkList()
		for _, l := range links {
			if l.Type() == "tuntap" {
				t.Errorf("%s left behind by a failed OpenTap", l.Attrs().Name)
			}
		}
		if err := c.Run(); err != nil {
			t.Errorf("Cleanup.Run after the failed open: %v", err)
		}

		makePersistentTap(t, "notbr", false)
		defer netlink.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "notbr"}})
		if _, err := OpenTap(TapOptions{Name: "guest1", Bridge: "notbr"}); err == nil || !strings.Contains(err.Error(), "not a bridge") {
			t.Fatalf("bridge that is a tap: %v", err)
		}
		if linkExists(t, "guest1") {
			t.Error("guest1 left behind")
		}
	})
}

// The VM-level guarantee: the Cleanup registry removes what OpenTap created
// when the VM fails later (a device that cannot start, a guest crash) and
// the VMM runs it on its error path instead of closing the tap itself.
func TestCleanupRemovesTapOnVMError(t *testing.T) {
	netnstest.Run(t, func() {
		var c Cleanup
		tap, err := OpenTap(TapOptions{Name: "vm0", Cleanup: &c})
		if err != nil {
			t.Fatal(err)
		}
		_ = tap
		if !linkExists(t, "vm0") {
			t.Fatal("vm0 missing")
		}
		if err := c.Run(); err != nil {
			t.Fatal(err)
		}
		if linkExists(t, "vm0") {
			t.Error("vm0 survived Cleanup.Run")
		}
	})
}

func TestOffloadFlagsAcceptedByKernel(t *testing.T) {
	guestBits := []uint{FeatureNetGuestCsum, FeatureNetGuestTSO4, FeatureNetGuestTSO6, FeatureNetGuestECN, FeatureNetGuestUFO}
	netnstest.Run(t, func() {
		tap, err := OpenTap(TapOptions{Name: TapAuto})
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		// Every combination a driver could ack, spec-conforming or not,
		// maps to flags the kernel takes.
		for mask := 0; mask < 1<<len(guestBits); mask++ {
			var f uint64
			for i, b := range guestBits {
				if mask&(1<<i) != 0 {
					f |= 1 << b
				}
			}
			if err := tap.SetOffload(f); err != nil {
				t.Errorf("features %#x -> flags %#x: %v", f, OffloadFlags(f), err)
			}
		}
		// And the kernel does refuse what OffloadFlags never produces.
		for _, bad := range []uint{TunFTSO4, TunFUFO, TunFCsum | TunFTSOECN, TunFTSO6 | TunFTSOECN, 1 << 15} {
			err := tap.SetOffloadFlags(bad)
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("TUNSETOFFLOAD %#x: %v, want EINVAL", bad, err)
			}
		}
	})
}
