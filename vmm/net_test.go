package vmm

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kvmm/kvmm/internal/guesttest"
	"github.com/kvmm/kvmm/internal/netnstest"
	"github.com/kvmm/kvmm/vhost"
)

func TestParseNet(t *testing.T) {
	o, err := ParseNet("tap=auto,bus=1,queues=2,mac=52:54:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	if o.Kind != vhost.KindTap || o.Tap != vhost.TapAuto || o.Bus == nil || *o.Bus != 1 || o.Queues != 2 ||
		o.MAC.String() != "52:54:00:00:00:01" || o.Vhost != vhost.VhostAuto {
		t.Errorf("parsed %+v (bus %v)", o, o.Bus)
	}
	if o, err = ParseNet("macvtap=eth0,mode=vepa"); err != nil || o.Bus != nil || o.Mode != vhost.MacvtapVEPA {
		t.Errorf("macvtap: %+v, %v", o, err)
	}
	for _, bad := range []string{"tap=auto,bus=x", "tap=auto,bus=-1", "tap=auto,bus=1,bus=2", "bus=1", "tap=a,vhost=maybe", ""} {
		if _, err := ParseNet(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidateNet(t *testing.T) {
	for _, tc := range []struct {
		nets    []string
		bridges int
		want    string
	}{
		{[]string{"tap=t0", "tap=t0"}, 0, "tap t0 is already net 0's"},
		{[]string{"tap=auto,mac=52:54:00:00:00:01", "tap=auto,mac=52:54:00:00:00:01"}, 0, "is already net 0's"},
		{[]string{"tap=auto,bus=2"}, 1, "PCI bus 2 does not exist"},
		{[]string{"tap=auto,queues=0"}, 0, "queues"},
		{[]string{"tap=auto", "tap=auto", "tap=t1,bus=1"}, 1, ""},
	} {
		c := DefaultConfig()
		c.Net, c.PCI.Bridges = tc.nets, tc.bridges
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.nets, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: %v, want %q", tc.nets, err, tc.want)
		}
	}
}

func TestDefaultMAC(t *testing.T) {
	a, b := defaultMAC("kvmm0"), defaultMAC("kvmm1")
	if a != defaultMAC("kvmm0") || a == b {
		t.Errorf("MACs %s %s: want one per name, the same every time", a, b)
	}
	if a[0] != 0x52 || a[0]&2 == 0 || a[0]&1 != 0 {
		t.Errorf("%s is not a locally administered unicast address", a)
	}
}

// netVM builds a VM on the calling thread (inside netnstest.Run: its links
// go to the test's namespace) with logs kept for the test.
func netVM(t *testing.T, cfg Config) (*VM, *SerialBuffer, *SerialBuffer) {
	t.Helper()
	var out, logs SerialBuffer
	vm, err := New(cfg, Options{Serial: &out, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return vm, &out, &logs
}

func linkGone(t *testing.T, name string) bool {
	t.Helper()
	_, err := netlink.LinkByName(name)
	return err != nil
}

// TestVirtioNetGuest boots virtionet under kvmm on a tap kvmm creates in
// the test's namespace, vhost=auto (this host has no /dev/vhost-net: the
// userspace backend). The test is the other end of the wire, as under QEMU
// (internal/guesttest): it sees the guest's frame on the tap, answers it,
// and sees the frame the guest sends after a reset and a new set-up. When
// the VM has ended, the tap is gone. The second run gives the NIC two
// queue pairs on a multi-queue tap: a driver that does not negotiate
// VIRTIO_NET_F_MQ (this one) finds the control queue at index 2 all the
// same.
func TestVirtioNetGuest(t *testing.T) {
	requireKVM(t)
	netnstest.Require(t)
	for _, net := range []string{
		"tap=kvmmt0,mac=" + guesttest.NetGuestMAC + ",vhost=auto",
		"tap=kvmmt0,mac=" + guesttest.NetGuestMAC + ",vhost=off,queues=2",
	} {
		t.Run(strings.TrimPrefix(net[strings.LastIndex(net, ","):], ","), func(t *testing.T) {
			cfg := guestConfig(t, "virtionet", 1)
			cfg.Net = []string{net}
			netnstest.Run(t, func() { virtioNetGuest(t, cfg) })
		})
	}
}

func virtioNetGuest(t *testing.T, cfg Config) {
	vm, out, logs := netVM(t, cfg)
	link, err := netlink.LinkByName("kvmmt0")
	if err != nil {
		t.Fatal(err)
	}
	ps := netnstest.OpenPacket(t, link.Attrs().Index, false)
	defer ps.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	if err := guesttest.NetExchange(ps, 30*time.Second); err != nil {
		t.Error(err)
	}
	res, err := vm.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v\nserial:\n%s", err, out.String())
	}
	t.Logf("guest serial:\n%s", out.String())
	mmio64 := pciMMIO64Window(uint64(cfg.Memory)).Start
	expect(t, out.String(), res, guesttest.PassStatus,
		"virtio-net 00:01.0\n",
		"  caps: common bar 4+0x00000000, notify +0x00003000 x4, isr +0x00001000, device +0x00002000 len 10\n",
		"  BAR4 at "+pciHex64(mmio64)[:12],
		"  mac 52:54:00:12:34:56, link up\n",
		"  queues rx 0, tx 1, ctrl 2: 16 entries, no MSI-X vector\n",
		"  sent a 64-byte frame (header and frame in 2 descriptors), marker 0x5a\n",
		"  control queue: GUEST_OFFLOADS_SET 0 acknowledged\n",
		"  received the host's 100-byte frame from 02:00:00:00:00:01, every byte as sent, num_buffers 1 (",
		"  reset (status 0) and set up again: sent a frame, marker 0x5b\n",
		"virtionet: passed\n",
		guesttest.PassLine("virtionet"))
	want := "userspace virtio-net backend: vhost=auto and vhost-net is unusable"
	if strings.Contains(cfg.Net[0], "vhost=off") {
		want = "userspace virtio-net backend: vhost=off"
	}
	if !strings.Contains(logs.String(), want) {
		t.Errorf("the log does not say which backend was chosen (%q):\n%s", want, logs.String())
	}
	if !linkGone(t, "kvmmt0") {
		t.Error("the tap kvmm created outlived the VM")
	}
}

// vhost=on on a host without a usable vhost-net is a start-up error that
// names the cause, and nothing is left behind.
func TestNetVhostOnRefused(t *testing.T) {
	requireKVM(t)
	if vhost.Available() == nil {
		t.Skip("this host has a usable /dev/vhost-net")
	}
	cfg := guestConfig(t, "idle", 1)
	cfg.Net = []string{"tap=auto", "tap=kvmmvh0,vhost=on"}
	netnstest.Run(t, func() {
		before, _ := netlink.LinkList()
		_, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
		if err == nil || !strings.Contains(err.Error(), "vhost=on") || !strings.Contains(err.Error(), vhost.DevicePath) {
			t.Fatalf("New: %v, want a vhost=on error naming %s", err, vhost.DevicePath)
		}
		after, _ := netlink.LinkList()
		if len(after) != len(before) {
			t.Errorf("%d links before, %d after the failed start", len(before), len(after))
		}
	})
}

// Every way a VM ends removes what kvmm changed on the host: here a tap
// kvmm creates and an existing tap kvmm attaches to a bridge (which, unlike
// the tap, would survive kvmm's process), on a host stop (what the CLI's
// SIGTERM does), a guest poweroff, and a start that fails after the
// interfaces were opened.
func TestNetCleanupOnEveryExit(t *testing.T) {
	requireKVM(t)
	netnstest.Require(t)
	idle := guesttest.BuildT(t, "idle")
	hello := guesttest.BuildT(t, "hello")
	garbage := t.TempDir() + "/garbage"
	if err := os.WriteFile(garbage, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	netnstest.Run(t, func() {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "kvmmbr0"}}
		if err := netlink.LinkAdd(br); err != nil {
			t.Fatal(err)
		}
		_, remove := netnstest.PersistentTap(t, "kvmmex0")
		defer remove()
		master := func() int {
			l, err := netlink.LinkByName("kvmmex0")
			if err != nil {
				t.Fatal(err)
			}
			return l.Attrs().MasterIndex
		}
		for _, tc := range []struct {
			name   string
			kernel string
			end    func(vm *VM, out *SerialBuffer)
		}{
			{"host stop", idle, func(vm *VM, out *SerialBuffer) {
				ready, cancelReady := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancelReady()
				if err := out.WaitFor(ready, "idle: ready"); err != nil {
					t.Fatalf("the idle guest: %v\n%s", err, out.String())
				}
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // as the CLI's signal context on SIGTERM
				if _, err := vm.Wait(ctx); err == nil {
					t.Error("Wait with a cancelled context returned no error")
				}
			}},
			{"guest exit", hello, func(vm *VM, out *SerialBuffer) {
				if _, err := vm.Wait(context.Background()); err != nil {
					t.Error(err)
				}
			}},
			{"failed start", garbage, nil},
		} {
			cfg := guestConfig(t, "idle", 1)
			cfg.Kernel = tc.kernel
			cfg.Net = []string{"tap=kvmmex0,bridge=kvmmbr0", "tap=kvmmnew0"}
			var out SerialBuffer
			vm, err := New(cfg, Options{Serial: &out, Logger: slog.New(slog.DiscardHandler)})
			if tc.end == nil {
				if err == nil {
					t.Fatalf("%s: New accepted a garbage kernel", tc.name)
				}
			} else {
				if err != nil {
					t.Fatalf("%s: New: %v", tc.name, err)
				}
				if master() == 0 || linkGone(t, "kvmmnew0") {
					t.Fatalf("%s: the interfaces are not set up", tc.name)
				}
				if err := vm.Start(); err != nil {
					t.Fatal(err)
				}
				tc.end(vm, &out)
			}
			if m := master(); m != 0 {
				t.Errorf("%s: the existing tap is still on bridge %d", tc.name, m)
			}
			if !linkGone(t, "kvmmnew0") {
				t.Errorf("%s: the tap kvmm created is still there", tc.name)
			}
		}
	})
}
