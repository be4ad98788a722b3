package vhost

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/memory"
)

// What a 6.1 vhost-net offers (VHOST_NET_FEATURES, drivers/vhost/net.c and
// vhost.h): NOTIFY_ON_EMPTY, INDIRECT_DESC, EVENT_IDX, LOG_ALL, ANY_LAYOUT
// (= VHOST_NET_F_VIRTIO_NET_HDR), VERSION_1, MRG_RXBUF, ACCESS_PLATFORM.
const kernelOffered = 1<<FeatureNotifyOnEmpty | 1<<FeatureIndirectDesc | 1<<FeatureEventIdx |
	1<<FeatureLogAll | 1<<FeatureAnyLayout | 1<<FeatureVersion1 | 1<<FeatureNetMrgRxbuf |
	1<<FeatureAccessPlatform

// A typical Linux driver's acked set: ring features plus device features
// that must never reach vhost (CSUM, GUEST_CSUM, GUEST_TSO4, MAC, STATUS,
// CTRL_VQ, MQ) and ANY_LAYOUT, which legacy drivers ack.
const driverAcked = 1<<FeatureVersion1 | 1<<FeatureNetMrgRxbuf | 1<<FeatureEventIdx |
	1<<FeatureIndirectDesc | 1<<FeatureAnyLayout | 1<<FeatureNetCsum | 1<<FeatureNetGuestCsum |
	1<<FeatureNetGuestTSO4 | 1<<5 /* MAC */ | 1<<16 /* STATUS */ | 1<<17 /* CTRL_VQ */ | 1<<22 /* MQ */

func testMemory(t *testing.T, size uint64) *memory.Guest {
	t.Helper()
	mem, err := memory.New(size, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem
}

// ringAt lays out a split ring of size entries at gpa the way Linux does:
// descriptors, then the available ring, then the used ring on the next
// 4-byte boundary.
func ringAt(gpa uint64, size uint16, kick, call int) QueueConfig {
	n := uint64(size)
	avail := gpa + 16*n
	used := (avail + 6 + 2*n + 3) &^ 3
	return QueueConfig{Size: size, DescGPA: gpa, AvailGPA: avail, UsedGPA: used, KickFD: kick, CallFD: call}
}

// testConfig gives queue pair p the tap fd 400+p, and queue q a ring at
// base+q*64KiB with kick eventfd 200+q and call eventfd 300+q: the fake
// does not use them as fds, it only checks they are wired to the right ring.
func testConfig(mem *memory.Guest, pairs int, base uint64) StartConfig {
	cfg := StartConfig{Memory: mem, Features: driverAcked}
	for q := 0; q < 2*pairs; q++ {
		cfg.Queues = append(cfg.Queues, ringAt(base+uint64(q)*0x10000, 256, 200+q, 300+q))
	}
	for p := 0; p < pairs; p++ {
		cfg.TapFDs = append(cfg.TapFDs, 400+p)
	}
	return cfg
}

// pairSequence is §4.3's order for one queue pair.
var pairSequence = []string{
	"VHOST_SET_OWNER", "VHOST_GET_FEATURES", "VHOST_SET_FEATURES", "VHOST_SET_MEM_TABLE",
	"VHOST_SET_VRING_NUM", "VHOST_SET_VRING_BASE", "VHOST_SET_VRING_ADDR", "VHOST_SET_VRING_KICK", "VHOST_SET_VRING_CALL",
	"VHOST_SET_VRING_NUM", "VHOST_SET_VRING_BASE", "VHOST_SET_VRING_ADDR", "VHOST_SET_VRING_KICK", "VHOST_SET_VRING_CALL",
	"VHOST_NET_SET_BACKEND", "VHOST_NET_SET_BACKEND",
}

var stopSequence = []string{
	"VHOST_NET_SET_BACKEND", "VHOST_NET_SET_BACKEND", "VHOST_GET_VRING_BASE", "VHOST_GET_VRING_BASE", "VHOST_RESET_OWNER",
}

func steps(calls []fakeCall) []string {
	var s []string
	for _, c := range calls {
		s = append(s, c.step)
	}
	return s
}

func openFake(t *testing.T, pairs int) (*fakeVhost, *NetBackend) {
	t.Helper()
	f := newFakeVhost(kernelOffered)
	b, err := openNet(f, pairs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := steps(f.takeCalls()); !reflect.DeepEqual(got, []string{"VHOST_GET_FEATURES"}) {
		t.Fatalf("OpenNet issued %v, want only VHOST_GET_FEATURES", got)
	}
	return f, b
}

// hostAddr is where gpa lives in this process, computed independently of
// translateRing.
func hostAddr(t *testing.T, mem *memory.Guest, gpa uint64) uint64 {
	t.Helper()
	s, err := mem.Slice(gpa, 1)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(uintptr(unsafe.Pointer(&s[0])))
}

func TestNetStartSequence(t *testing.T) {
	mem := testMemory(t, 16*layout.MiB)
	f, b := openFake(t, 2)
	defer b.Close()
	if got, want := b.Features(), uint64(PassthroughFeatures); got != want {
		t.Errorf("Features() = %#x, want %#x", got, want)
	}
	cfg := testConfig(mem, 2, 0x100000)
	cfg.Queues[3].ErrFD = 99
	if err := b.Start(cfg); err != nil {
		t.Fatal(err)
	}
	calls := f.takeCalls()
	fds := []int{calls[0].fd}
	for _, c := range calls {
		if c.fd != fds[len(fds)-1] {
			fds = append(fds, c.fd)
		}
	}
	if len(fds) != 2 || fds[0] == fds[1] {
		t.Fatalf("ioctls went to fds %v, want one instance per pair, pair 0 finished before pair 1", fds)
	}
	want1 := append(append([]string(nil), pairSequence[:14]...), "VHOST_SET_VRING_ERR", "VHOST_NET_SET_BACKEND", "VHOST_NET_SET_BACKEND")
	if got := steps(calls[:len(pairSequence)]); !reflect.DeepEqual(got, pairSequence) {
		t.Errorf("pair 0 sequence:\n got %v\nwant %v", got, pairSequence)
	}
	if got := steps(calls[len(pairSequence):]); !reflect.DeepEqual(got, want1) {
		t.Errorf("pair 1 sequence:\n got %v\nwant %v", got, want1)
	}

	// Memory table: every region, host address of its mapping.
	for _, c := range calls {
		if c.step != "VHOST_SET_MEM_TABLE" {
			continue
		}
		r := mem.Regions()
		if len(c.mem) != len(r) {
			t.Fatalf("memory table has %d regions, want %d", len(c.mem), len(r))
		}
		for i := range r {
			want := vhostMemoryRegion{GuestPhysAddr: r[i].GPA, MemorySize: r[i].Size(), UserspaceAddr: hostAddr(t, mem, r[i].GPA)}
			if c.mem[i] != want {
				t.Errorf("region %d: %+v, want %+v", i, c.mem[i], want)
			}
		}
	}

	// Each ring: size, base, addresses, eventfds and tap of its own queue.
	for p, fd := range fds {
		in := f.instance(fd)
		for vq := 0; vq < 2; vq++ {
			q := cfg.Queues[2*p+vq]
			r := in.rings[vq]
			if r.num != uint32(q.Size) || r.base != 0 {
				t.Errorf("pair %d ring %d: num %d base %d", p, vq, r.num, r.base)
			}
			if int(r.kick) != q.KickFD || int(r.call) != q.CallFD {
				t.Errorf("pair %d ring %d: kick %d call %d, want %d %d", p, vq, r.kick, r.call, q.KickFD, q.CallFD)
			}
			wantErr := int32(-1)
			if q.ErrFD > 0 {
				wantErr = int32(q.ErrFD)
			}
			if r.errf != wantErr {
				t.Errorf("pair %d ring %d: err fd %d, want %d", p, vq, r.errf, wantErr)
			}
			want := vhostVringAddr{
				Index:         uint32(vq),
				DescUserAddr:  hostAddr(t, mem, q.DescGPA),
				UsedUserAddr:  hostAddr(t, mem, q.UsedGPA),
				AvailUserAddr: hostAddr(t, mem, q.AvailGPA),
				LogGuestAddr:  q.UsedGPA,
			}
			if *r.addr != want {
				t.Errorf("pair %d ring %d: addr %+v, want %+v", p, vq, *r.addr, want)
			}
			if int(r.backend) != cfg.TapFDs[p] {
				t.Errorf("pair %d ring %d: backend %d, want tap fd %d", p, vq, r.backend, cfg.TapFDs[p])
			}
		}
		if in.features != PassthroughFeatures&driverAcked {
			t.Errorf("pair %d: features %#x", p, in.features)
		}
	}
}

// Rings in RAM above the 32-bit hole translate through the second region,
// and every address vhost gets lies inside the guest RAM mapping.
func TestNetRingAddressesInsideGuestRAM(t *testing.T) {
	// 3 GiB + 32 MiB: two regions. MAP_NORESERVE: only touched pages cost.
	mem := testMemory(t, layout.MMIOHoleStart+32*layout.MiB)
	if len(mem.Regions()) != 2 {
		t.Fatalf("%d regions, want 2", len(mem.Regions()))
	}
	f, b := openFake(t, 1)
	defer b.Close()
	cfg := testConfig(mem, 1, 0)
	cfg.Queues[0] = ringAt(layout.HighRAMStart+0x1000, 1024, 201, 301) // high RAM
	cfg.Queues[1] = ringAt(layout.MMIOHoleStart-0x8000, 256, 202, 302) // top of low RAM
	// The used ring (6 + 8*256 bytes) ends 2 bytes short of the hole.
	cfg.Queues[1].UsedGPA = layout.MMIOHoleStart - 2056
	if err := b.Start(cfg); err != nil {
		t.Fatal(err)
	}
	lo := uint64(uintptr(unsafe.Pointer(&mem.Regions()[0].Host()[0])))
	hi := lo + mem.Size()
	for _, c := range f.takeCalls() {
		if c.step != "VHOST_SET_VRING_ADDR" {
			continue
		}
		q := cfg.Queues[c.index]
		n := uint64(q.Size)
		for _, p := range []struct {
			hva, gpa, len uint64
		}{{c.addr.DescUserAddr, q.DescGPA, 16 * n}, {c.addr.AvailUserAddr, q.AvailGPA, 6 + 2*n}, {c.addr.UsedUserAddr, q.UsedGPA, 6 + 8*n}} {
			if p.hva < lo || p.hva+p.len > hi {
				t.Errorf("ring %d: [%#x, +%#x) outside the guest mapping [%#x, %#x)", c.index, p.hva, p.len, lo, hi)
			}
			if p.hva != hostAddr(t, mem, p.gpa) {
				t.Errorf("ring %d: GPA %#x -> %#x, want %#x", c.index, p.gpa, p.hva, hostAddr(t, mem, p.gpa))
			}
		}
	}
}

func TestNetFeatures(t *testing.T) {
	mem := testMemory(t, 16*layout.MiB)
	for _, tc := range []struct {
		name    string
		offered uint64
		acked   uint64
		want    uint64 // VHOST_SET_FEATURES; 0 with wantErr
		wantErr string
	}{
		{"typical driver", kernelOffered, driverAcked,
			1<<FeatureVersion1 | 1<<FeatureNetMrgRxbuf | 1<<FeatureEventIdx | 1<<FeatureIndirectDesc, ""},
		{"everything acked", kernelOffered, ^uint64(0), PassthroughFeatures, ""},
		{"VERSION_1 only", kernelOffered, 1 << FeatureVersion1, 1 << FeatureVersion1, ""},
		{"legacy MRG_RXBUF without VERSION_1", kernelOffered, 1<<FeatureNetMrgRxbuf | 1<<FeatureAnyLayout, 1 << FeatureNetMrgRxbuf, ""},
		{"10-byte header", kernelOffered, 1<<FeatureEventIdx | 1<<FeatureAnyLayout, 0, "neither VERSION_1 nor MRG_RXBUF"},
		{"kernel without EVENT_IDX", kernelOffered &^ (1 << FeatureEventIdx), driverAcked, 0, "kernel lacks acked features 0x20000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeVhost(tc.offered)
			b, err := openNet(f, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			cfg := testConfig(mem, 1, 0x100000)
			cfg.Features = tc.acked
			err = b.Start(cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Start: %v, want %q", err, tc.wantErr)
				}
				var se *StepError
				if errors.As(err, &se) {
					// A kernel step failed: nothing may stay half started.
					if fds := f.openFDs(); len(fds) != 0 {
						t.Errorf("instances %v left open", fds)
					}
				} else if calls := steps(f.takeCalls()); len(calls) != 1 {
					// A configuration error: found before any ioctl
					// (the one call is OpenNet's VHOST_GET_FEATURES).
					t.Errorf("ioctls %v for a rejected configuration", calls)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range f.takeCalls() {
				if c.step != "VHOST_SET_FEATURES" {
					continue
				}
				if c.value&(1<<FeatureAnyLayout) != 0 {
					t.Errorf("bit 27 (VHOST_NET_F_VIRTIO_NET_HDR) passed with a vnet-header tap: %#x", c.value)
				}
				if c.value != tc.want {
					t.Errorf("VHOST_SET_FEATURES %#x, want %#x", c.value, tc.want)
				}
			}
			if b.Acked() != tc.want {
				t.Errorf("Acked() = %#x, want %#x", b.Acked(), tc.want)
			}
		})
	}
	for _, acked := range []uint64{0, driverAcked, ^uint64(0), 1 << FeatureAnyLayout} {
		if NegotiatedFeatures(acked)&(1<<FeatureAnyLayout) != 0 {
			t.Errorf("NegotiatedFeatures(%#x) has bit 27", acked)
		}
	}
	if VnetHdrLen(1<<FeatureVersion1) != 12 || VnetHdrLen(1<<FeatureNetMrgRxbuf) != 12 || VnetHdrLen(0) != 10 {
		t.Error("VnetHdrLen wrong")
	}
}

// Stop detaches, reads back the ring positions and releases ownership; a
// Start after it (device reset, or resume from S3 with the saved bases)
// repeats the full sequence on the same instances with the new rings.
func TestNetStopAndRestart(t *testing.T) {
	mem := testMemory(t, 16*layout.MiB)
	f, b := openFake(t, 2)
	defer b.Close()
	if bases, err := b.Stop(); bases != nil || err != nil {
		t.Errorf("Stop before Start: %v %v, want nothing", bases, err)
	}
	cfg := testConfig(mem, 2, 0x100000)
	if err := b.Start(cfg); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(cfg); err == nil {
		t.Error("second Start while started succeeded")
	}
	calls := f.takeCalls()
	fd0, fd1 := calls[0].fd, calls[len(calls)-1].fd
	// The worker consumed some descriptors.
	f.advance(fd0, 0, 17)
	f.advance(fd0, 1, 3)
	f.advance(fd1, 0, 65535)
	f.advance(fd1, 1, 2)

	bases, err := b.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint16{17, 3, 65535, 2}; !reflect.DeepEqual(bases, want) {
		t.Errorf("bases %v, want %v", bases, want)
	}
	calls = f.takeCalls()
	want := append(append([]string(nil), stopSequence...), stopSequence...)
	if got := steps(calls); !reflect.DeepEqual(got, want) {
		t.Errorf("Stop sequence:\n got %v\nwant %v", got, want)
	}
	for _, c := range calls {
		if c.step == "VHOST_NET_SET_BACKEND" && c.file != -1 {
			t.Errorf("Stop attached fd %d, want -1 (detach)", c.file)
		}
	}
	for _, fd := range []int{fd0, fd1} {
		in := f.instance(fd)
		if in == nil {
			t.Fatalf("instance %d closed by Stop; it is kept for the restart", fd)
		}
		if in.owner || in.rings[0].backend != -1 || in.rings[1].backend != -1 {
			t.Errorf("instance %d after Stop: owner %v backends %d %d", fd, in.owner, in.rings[0].backend, in.rings[1].backend)
		}
	}

	// Resume (S3): new ring addresses, saved bases.
	cfg2 := testConfig(mem, 2, 0x400000)
	for i := range cfg2.Queues {
		cfg2.Queues[i].LastAvailIdx = bases[i]
	}
	if err := b.Start(cfg2); err != nil {
		t.Fatalf("restart: %v", err)
	}
	calls = f.takeCalls()
	want = append(append([]string(nil), pairSequence...), pairSequence...)
	if got := steps(calls); !reflect.DeepEqual(got, want) {
		t.Errorf("restart sequence:\n got %v\nwant %v", got, want)
	}
	if calls[0].fd != fd0 || calls[len(calls)-1].fd != fd1 {
		t.Errorf("restart used fds %d..%d, want the same instances %d, %d", calls[0].fd, calls[len(calls)-1].fd, fd0, fd1)
	}
	for p, fd := range []int{fd0, fd1} {
		in := f.instance(fd)
		for vq := 0; vq < 2; vq++ {
			q := cfg2.Queues[2*p+vq]
			if in.rings[vq].base != uint32(q.LastAvailIdx) || in.rings[vq].addr.DescUserAddr != hostAddr(t, mem, q.DescGPA) {
				t.Errorf("pair %d ring %d after restart: base %d desc %#x", p, vq, in.rings[vq].base, in.rings[vq].addr.DescUserAddr)
			}
		}
	}

	// A device that comes back with fewer queue pairs (MQ not negotiated).
	if _, err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	f.takeCalls()
	if err := b.Start(testConfig(mem, 1, 0x100000)); err != nil {
		t.Fatal(err)
	}
	if got := steps(f.takeCalls()); !reflect.DeepEqual(got, pairSequence) {
		t.Errorf("one-pair restart: %v", got)
	}
	if bases, err := b.Stop(); err != nil || len(bases) != 2 {
		t.Errorf("Stop after one-pair start: %v %v", bases, err)
	}
}

// A failure at any step names the step and leaves nothing half started:
// all instances closed (the kernel's release path detaches and stops
// everything), and the next Start reopens and succeeds.
func TestNetStartFailureAtEveryStep(t *testing.T) {
	mem := testMemory(t, 16*layout.MiB)
	type point struct {
		step string
		nth  int // which occurrence across both pairs
		pair int
		vq   int
	}
	var points []point
	seen := map[string]int{}
	for p := 0; p < 2; p++ {
		vq := -1
		for i, s := range pairSequence {
			seen[s]++
			switch {
			case i >= 4 && i < 9:
				vq = 0
			case i >= 9 && i < 14:
				vq = 1
			case i == 14:
				vq = 0
			case i == 15:
				vq = 1
			default:
				vq = -1
			}
			points = append(points, point{s, seen[s], p, vq})
		}
	}
	for _, pt := range points {
		t.Run(fmt.Sprintf("%s#%d", pt.step, pt.nth), func(t *testing.T) {
			f, b := openFake(t, 2)
			defer b.Close()
			f.failAt(pt.step, pt.nth, unix.EIO)
			err := b.Start(testConfig(mem, 2, 0x100000))
			var se *StepError
			if !errors.As(err, &se) {
				t.Fatalf("Start: %v, want a *StepError", err)
			}
			if se.Step != pt.step || se.Pair != pt.pair || se.VQ != pt.vq || !errors.Is(err, unix.EIO) {
				t.Errorf("error %q (step %s pair %d vq %d), want step %s pair %d vq %d wrapping EIO",
					err, se.Step, se.Pair, se.VQ, pt.step, pt.pair, pt.vq)
			}
			if !strings.Contains(err.Error(), pt.step) {
				t.Errorf("message %q does not name %s", err, pt.step)
			}
			if fds := f.openFDs(); len(fds) != 0 {
				t.Errorf("instances %v still open after a failed Start", fds)
			}
			if bases, err := b.Stop(); bases != nil || err != nil {
				t.Errorf("Stop after failed Start: %v %v, want nothing to stop", bases, err)
			}
			f.failAt("", 0, nil)
			if err := b.Start(testConfig(mem, 2, 0x100000)); err != nil {
				t.Fatalf("Start after the failure: %v", err)
			}
			if fds := f.openFDs(); len(fds) != 2 {
				t.Errorf("%d instances after the retry, want 2", len(fds))
			}
		})
	}
	t.Run("open", func(t *testing.T) {
		f, b := openFake(t, 2)
		defer b.Close()
		f.failAt("VHOST_SET_MEM_TABLE", 1, unix.ENOMEM)
		if err := b.Start(testConfig(mem, 2, 0x100000)); err == nil {
			t.Fatal("Start succeeded")
		}
		// The reopen itself fails on the second instance.
		f.failAt("open", 2, unix.EACCES)
		err := b.Start(testConfig(mem, 2, 0x100000))
		var se *StepError
		if !errors.As(err, &se) || se.Step != "open" || se.Pair != 1 {
			t.Fatalf("Start: %v, want an open failure of pair 1", err)
		}
		if fds := f.openFDs(); len(fds) != 0 {
			t.Errorf("instances %v open after a failed reopen", fds)
		}
	})
}

func TestNetStopFailure(t *testing.T) {
	mem := testMemory(t, 16*layout.MiB)
	for i, step := range stopSequence {
		t.Run(fmt.Sprintf("%d-%s", i, step), func(t *testing.T) {
			f, b := openFake(t, 2)
			defer b.Close()
			if err := b.Start(testConfig(mem, 2, 0x100000)); err != nil {
				t.Fatal(err)
			}
			nth := 1
			if i == 1 || i == 3 {
				nth = 2 // the TX ring's call of the same ioctl
			}
			f.failAt(step, nth, unix.EIO)
			_, err := b.Stop()
			if err == nil || !strings.Contains(err.Error(), step) {
				t.Fatalf("Stop: %v, want an error naming %s", err, step)
			}
			if fds := f.openFDs(); len(fds) != 0 {
				t.Errorf("instances %v open after a failed Stop", fds)
			}
			f.failAt("", 0, nil)
			if err := b.Start(testConfig(mem, 2, 0x100000)); err != nil {
				t.Errorf("Start after a failed Stop: %v", err)
			}
		})
	}
}

// Configuration errors are found before the first ioctl, so the kernel is
// never left holding part of a bad configuration.
func TestNetConfigRejectedBeforeAnyIoctl(t *testing.T) {
	mem := testMemory(t, 16*layout.MiB)
	end := mem.Size()
	for _, tc := range []struct {
		name string
		edit func(*StartConfig)
		want string
	}{
		{"no memory", func(c *StartConfig) { c.Memory = nil }, "no guest memory"},
		{"no pairs", func(c *StartConfig) { c.TapFDs = nil; c.Queues = nil }, "0 tap fds"},
		{"too many pairs", func(c *StartConfig) { *c = testConfig(mem, 3, 0x100000) }, "3 tap fds"},
		{"queue count", func(c *StartConfig) { c.Queues = c.Queues[:3] }, "3 queues for 2 queue pairs"},
		{"size not a power of two", func(c *StartConfig) { c.Queues[1].Size = 100 }, "queue size 100"},
		{"size zero", func(c *StartConfig) { c.Queues[1].Size = 0 }, "queue size 0"},
		{"desc misaligned", func(c *StartConfig) { c.Queues[0].DescGPA += 8 }, "not 16-byte aligned"},
		{"used misaligned", func(c *StartConfig) { c.Queues[2].UsedGPA += 2 }, "not 4-byte aligned"},
		{"avail misaligned", func(c *StartConfig) { c.Queues[2].AvailGPA++ }, "not 2-byte aligned"},
		{"desc outside RAM", func(c *StartConfig) { c.Queues[0].DescGPA = end }, "descriptor table"},
		{"used ring past the end of RAM", func(c *StartConfig) { c.Queues[3].UsedGPA = end - 1024 }, "used ring"},
		{"avail in the MMIO hole", func(c *StartConfig) { c.Queues[1].AvailGPA = layout.MMIOHoleStart }, "available ring"},
		{"desc wraps", func(c *StartConfig) { c.Queues[0].DescGPA = ^uint64(0) &^ 15 }, "descriptor table"},
		{"no kick", func(c *StartConfig) { c.Queues[1].KickFD = 0 }, "kick fd 0"},
		{"no call", func(c *StartConfig) { c.Queues[1].CallFD = -1 }, "call fd -1"},
		{"bad tap", func(c *StartConfig) { c.TapFDs[1] = -1 }, "tap fd -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, b := openFake(t, 2)
			defer b.Close()
			cfg := testConfig(mem, 2, 0x100000)
			tc.edit(&cfg)
			err := b.Start(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want %q", err, tc.want)
			}
			if calls := f.takeCalls(); len(calls) != 0 {
				t.Errorf("ioctls issued for a bad configuration: %v", steps(calls))
			}
		})
	}
}

func TestNetOpenAndClose(t *testing.T) {
	f := newFakeVhost(kernelOffered)
	f.failAt("open", 3, unix.EMFILE)
	if _, err := openNet(f, 3, nil); err == nil || !strings.Contains(err.Error(), "open") {
		t.Fatalf("openNet: %v", err)
	}
	if fds := f.openFDs(); len(fds) != 0 {
		t.Errorf("instances %v left open by a failed OpenNet", fds)
	}
	f.failAt("VHOST_GET_FEATURES", 1, unix.EIO)
	if _, err := openNet(f, 2, nil); err == nil || !strings.Contains(err.Error(), "VHOST_GET_FEATURES") {
		t.Fatalf("openNet: %v", err)
	}
	if fds := f.openFDs(); len(fds) != 0 {
		t.Errorf("instances %v left open by a failed OpenNet", fds)
	}
	for _, n := range []int{0, -1, MaxQueuePairs + 1} {
		if _, err := openNet(f, n, nil); err == nil {
			t.Errorf("openNet with %d pairs succeeded", n)
		}
	}

	// Close while running: the Stop sequence, then every instance closed.
	mem := testMemory(t, 16*layout.MiB)
	f, b := openFake(t, 2)
	if err := b.Start(testConfig(mem, 2, 0x100000)); err != nil {
		t.Fatal(err)
	}
	f.takeCalls()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	want := append(append([]string(nil), stopSequence...), stopSequence...)
	if got := steps(f.takeCalls()); !reflect.DeepEqual(got, want) {
		t.Errorf("Close issued %v, want %v", got, want)
	}
	if fds := f.openFDs(); len(fds) != 0 {
		t.Errorf("instances %v open after Close", fds)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := b.Start(testConfig(mem, 2, 0x100000)); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// The real ioctl path: a character device that implements no vhost ioctl
// (/dev/null) makes the first one fail with the kernel's ENOTTY, reported
// with the step, and the fd is closed.
func TestNetKernelDevicePlumbing(t *testing.T) {
	before := countFDs(t)
	_, err := openNet(kernelDevice{path: "/dev/null"}, 2, nil)
	var se *StepError
	if !errors.As(err, &se) || se.Step != "VHOST_GET_FEATURES" || !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("openNet(/dev/null): %v, want VHOST_GET_FEATURES: ENOTTY", err)
	}
	if after := countFDs(t); after != before {
		t.Errorf("%d fds before, %d after: the instances leaked", before, after)
	}
	if _, err := openNet(kernelDevice{path: "/nonexistent/vhost-net"}, 1, nil); !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing node: %v, want ENOENT", err)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

func TestStepErrorMessage(t *testing.T) {
	e := &StepError{Pair: 1, VQ: 1, Step: "VHOST_SET_VRING_ADDR", Err: unix.EFAULT}
	if got, want := e.Error(), "vhost-net queue pair 1 ring 1 (TX): VHOST_SET_VRING_ADDR: bad address"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	e = &StepError{Pair: 0, VQ: -1, Step: "VHOST_SET_OWNER", Err: unix.EBUSY}
	if got, want := e.Error(), "vhost-net queue pair 0: VHOST_SET_OWNER: device or resource busy"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
