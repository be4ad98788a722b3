package virtio_test

import (
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvmm/kvmm/devices/pci"
	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

const waitTime = 5 * time.Second

// echoDevice is a device model for the transport tests: two queues whose
// worker copies each chain's readable bytes into its writable ones, and a
// 8-byte configuration.
type echoDevice struct {
	features uint64
	sizes    []uint16
	activate func(a virtio.Activation) error

	mu        sync.Mutex
	cfg       [8]byte
	workers   *virtio.Workers
	act       virtio.Activation
	resets    atomic.Int32
	handled   atomic.Int32
	activated atomic.Int32
}

func newEcho() *echoDevice {
	return &echoDevice{features: virtio.RingFeatures | 1<<3, sizes: []uint16{16, 16}}
}

func (d *echoDevice) Type() virtio.DeviceType { return 0x1F }
func (d *echoDevice) Features() uint64        { return d.features }
func (d *echoDevice) QueueSizes() []uint16    { return d.sizes }
func (d *echoDevice) ConfigSize() int         { return len(d.cfg) }

func (d *echoDevice) ReadConfig(off int, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(data, d.cfg[off:])
}

func (d *echoDevice) WriteConfig(off int, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.cfg[off:], data)
}

func (d *echoDevice) Activate(a virtio.Activation) error {
	if d.activate != nil {
		if err := d.activate(a); err != nil {
			return err
		}
	}
	d.activated.Add(1)
	var srcs []virtio.Source
	for _, q := range a.Queues {
		if !q.Ready() {
			continue
		}
		var c virtio.Chain
		srcs = append(srcs, virtio.QueueSource(q, func(q *virtio.Queue) {
			_ = q.Drain(&c, func(c *virtio.Chain) (uint32, error) {
				d.handled.Add(1)
				buf := make([]byte, c.ReadLen)
				if _, err := c.NewReader(a.Mem).Read(buf); err != nil && len(buf) > 0 {
					return 0, err
				}
				w := c.NewWriter(a.Mem)
				_, _ = w.Write(buf)
				return w.Written(), nil
			})
		}))
	}
	d.mu.Lock()
	d.act = a
	d.workers = virtio.StartWorkers(nil, srcs...)
	d.mu.Unlock()
	return nil
}

func (d *echoDevice) Reset() {
	d.mu.Lock()
	w := d.workers
	d.workers = nil
	d.mu.Unlock()
	w.Stop()
	d.resets.Add(1)
}

func (d *echoDevice) Close() error { return nil }

func features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc
}

// interruptFeatures leave out EVENT_IDX: with it, a driver that polls the
// used ring and moves used_event before the device looks at it rightly
// gets no interrupt, which would make interrupt counts racy.
func interruptFeatures() uint64 { return virtio.FeatureVersion1 | virtio.FeatureIndirectDesc }

// echo sends data through q and returns what came back.
func echo(t *testing.T, h *virtiotest.Harness, q *virtiotest.DriverQueue, data string) string {
	t.Helper()
	in := h.Alloc(uint64(len(data)), 8)
	out := h.Alloc(uint64(len(data)), 8)
	_ = h.Mem.Write(in, []byte(data))
	n, ok := q.Submit(waitTime, virtiotest.Buf{Addr: in, Len: uint32(len(data))}, virtiotest.Buf{Addr: out, Len: uint32(len(data)), Write: true})
	if !ok {
		t.Fatalf("queue %d: no completion; status %#x", q.Index, h.Status())
	}
	got := make([]byte, n)
	_ = h.Mem.Read(out, got)
	return string(got)
}

func TestPCIIdentityAndCapabilities(t *testing.T) {
	h := virtiotest.New(t, newEcho(), virtiotest.Options{})
	if v, d := h.ConfigRead16(pci.RegVendorID), h.ConfigRead16(pci.RegDeviceID); v != 0x1AF4 || d != 0x1040+0x1F {
		t.Errorf("IDs %04x:%04x", v, d)
	}
	if r := h.ConfigRead8(pci.RegRevision); r != 1 {
		t.Errorf("revision %d, want 1 (modern only)", r)
	}
	if sv, sd := h.ConfigRead16(pci.RegSubsysVendorID), h.ConfigRead16(pci.RegSubsysID); sv != 0x1AF4 || sd < 0x40 {
		t.Errorf("subsystem %04x:%04x", sv, sd)
	}
	if pin := h.ConfigRead8(pci.RegInterruptPin); pin != pci.PinA {
		t.Errorf("interrupt pin %d", pin)
	}
	// BAR 4: 64-bit prefetchable memory.
	if lo := h.ConfigRead32(pci.RegBAR0 + 4*virtio.VirtioBAR); lo&0xF != 0xC {
		t.Errorf("BAR 4 low bits %#x, want 64-bit prefetchable", lo&0xF)
	}
	want := map[int]struct{ off, length uint32 }{
		virtio.PCICapCommonCfg: {virtio.CommonOffset, virtio.CommonCfgLen},
		virtio.PCICapNotifyCfg: {virtio.NotifyOffset, 2 * virtio.NotifyOffMultiplier},
		virtio.PCICapISRCfg:    {virtio.ISROffset, 1},
		virtio.PCICapDeviceCfg: {virtio.DeviceCfgOffset, 8},
		virtio.PCICapPCICfg:    {0, 0},
	}
	for typ, w := range want {
		c := h.FindCap(pci.CapIDVendor, typ)
		if c == 0 {
			t.Errorf("no virtio capability of type %d", typ)
			continue
		}
		bar, off, length := h.ConfigRead8(c+4), h.ConfigRead32(c+8), h.ConfigRead32(c+12)
		if typ != virtio.PCICapPCICfg && (bar != virtio.VirtioBAR || off != w.off || length != w.length) {
			t.Errorf("cap type %d: bar %d offset %#x length %#x, want 4/%#x/%#x", typ, bar, off, length, w.off, w.length)
		}
		if typ == virtio.PCICapNotifyCfg {
			if l, m := h.ConfigRead8(c+2), h.ConfigRead32(c+16); l != 20 || m != virtio.NotifyOffMultiplier {
				t.Errorf("notify cap length %d multiplier %d", l, m)
			}
		}
	}
	if h.FindCap(pci.CapIDMSIX, -1) == 0 {
		t.Error("no MSI-X capability")
	}
}

func TestCommonConfigRegisters(t *testing.T) {
	h := virtiotest.New(t, newEcho(), virtiotest.Options{})
	if got := h.DeviceFeatures(); got != newEcho().features {
		t.Errorf("device features %#x", got)
	}
	h.SetCommon(virtio.CommonDeviceFeatureSelect, 4, 7)
	if v := h.Common(virtio.CommonDeviceFeature, 4); v != 0 {
		t.Errorf("feature word 7 reads %#x", v)
	}
	if n := h.Common(virtio.CommonNumQueues, 2); n != 2 {
		t.Errorf("num_queues %d", n)
	}
	h.SetCommon(virtio.CommonQueueSelect, 2, 1)
	if s := h.Common(virtio.CommonQueueSize, 2); s != 16 {
		t.Errorf("queue 1 size %d, want the maximum 16 after reset", s)
	}
	if off := h.Common(virtio.CommonQueueNotifyOff, 2); off != 1 {
		t.Errorf("queue 1 notify_off %d", off)
	}
	if v := h.Common(virtio.CommonQueueMSIXVector, 2); v != virtio.NoVector {
		t.Errorf("queue vector %#x after reset", v)
	}
	// A 64-bit address written as one QWORD and as two DWORDs.
	h.SetCommon(virtio.CommonQueueDesc, 8, 0x123456789A0)
	h.SetCommon(virtio.CommonQueueDriver, 4, 0xABCD0000)
	h.SetCommon(virtio.CommonQueueDriver+4, 4, 0x12)
	if d, a := h.Common(virtio.CommonQueueDesc, 8), h.Common(virtio.CommonQueueDriver, 8); d != 0x123456789A0 || a != 0x12ABCD0000 {
		t.Errorf("desc %#x driver %#x", d, a)
	}
	// Vectors beyond the table (3 = 2 queues + config) read back NO_VECTOR.
	h.SetCommon(virtio.CommonQueueMSIXVector, 2, 2)
	if v := h.Common(virtio.CommonQueueMSIXVector, 2); v != 2 {
		t.Errorf("vector 2 reads %#x", v)
	}
	h.SetCommon(virtio.CommonQueueMSIXVector, 2, 3)
	if v := h.Common(virtio.CommonQueueMSIXVector, 2); v != virtio.NoVector {
		t.Errorf("vector 3 of 3 reads %#x, want NO_VECTOR", v)
	}
	h.SetCommon(virtio.CommonConfigMSIXVector, 2, 1000)
	if v := h.Common(virtio.CommonConfigMSIXVector, 2); v != virtio.NoVector {
		t.Errorf("config vector 1000 reads %#x", v)
	}
	// Past the last queue everything reads 0 and writes are ignored.
	h.SetCommon(virtio.CommonQueueSelect, 2, 2)
	h.SetCommon(virtio.CommonQueueSize, 2, 8)
	if s := h.Common(virtio.CommonQueueSize, 2); s != 0 {
		t.Errorf("queue 2 of 2: size %d", s)
	}
	// Enabled queues keep their layout.
	h.SetCommon(virtio.CommonQueueSelect, 2, 0)
	h.SetCommon(virtio.CommonQueueEnable, 2, 1)
	h.SetCommon(virtio.CommonQueueSize, 2, 4)
	if s := h.Common(virtio.CommonQueueSize, 2); s != 16 {
		t.Errorf("size of an enabled queue changed to %d", s)
	}
	// Reads past the structure are zero; a byte read of status works.
	if v := h.Common(0x80, 4); v != 0 {
		t.Errorf("offset 0x80 reads %#x", v)
	}
	// The status register: drivers cannot set NEEDS_RESET nor clear bits.
	h.SetStatus(virtio.StatusAcknowledge | virtio.StatusNeedsReset)
	if s := h.Status(); s != virtio.StatusAcknowledge {
		t.Errorf("status %#x, want ACKNOWLEDGE only", s)
	}
	h.SetStatus(virtio.StatusDriver)
	if s := h.Status(); s != virtio.StatusAcknowledge|virtio.StatusDriver {
		t.Errorf("status %#x: ACKNOWLEDGE was cleared", s)
	}
}

// TestDeviceConfigAndGeneration: the device configuration region, and a
// configuration change as the driver sees it.
func TestDeviceConfigAndGeneration(t *testing.T) {
	d := newEcho()
	h := virtiotest.New(t, d, virtiotest.Options{})
	h.MMIOWrite(h.BAR+virtio.DeviceCfgOffset+2, 2, 0xBEEF)
	if got := h.DeviceConfig(0, 8); binary.LittleEndian.Uint16(got[2:]) != 0xBEEF {
		t.Errorf("config %x", got)
	}
	if got := h.DeviceConfig(6, 4); got[2] != 0 || got[3] != 0 {
		t.Errorf("bytes past the configuration read %x", got)
	}
	h.Init(features(), 16, 16)
	gen := h.Common(virtio.CommonConfigGeneration, 1)
	fired := h.Router.Fired(2) // the config vector
	h.Transport.ConfigChanged()
	if g := h.Common(virtio.CommonConfigGeneration, 1); g != (gen+1)&0xFF {
		t.Errorf("generation %d -> %d", gen, g)
	}
	if !h.Router.WaitFired(2, fired, waitTime) {
		t.Error("no configuration interrupt on the config vector")
	}
	if isr := h.ISR(); isr&virtio.ISRConfig == 0 {
		t.Errorf("ISR %#x lacks the configuration bit", isr)
	}
	if isr := h.ISR(); isr != 0 {
		t.Errorf("ISR %#x after a read: not cleared", isr)
	}
}

func TestFeatureNegotiation(t *testing.T) {
	h := virtiotest.New(t, newEcho(), virtiotest.Options{})
	for _, tc := range []struct {
		name     string
		features uint64
		ok       bool
	}{
		{"all offered", newEcho().features, true},
		{"a subset with VERSION_1", virtio.FeatureVersion1, true},
		{"an unoffered bit", virtio.FeatureVersion1 | 1<<5, false},
		{"a high unoffered bit", virtio.FeatureVersion1 | virtio.FeatureRingPacked, false},
		{"no VERSION_1", virtio.FeatureEventIdx, false},
	} {
		if got := h.Negotiate(tc.features); got != tc.ok {
			t.Errorf("%s (%#x): FEATURES_OK %v, want %v", tc.name, tc.features, got, tc.ok)
		}
	}
	if m := h.Transport.Metrics(); m.FeaturesRefused != 3 {
		t.Errorf("%d refusals counted", m.FeaturesRefused)
	}
	// Driver features are frozen once FEATURES_OK is set.
	h.Negotiate(virtio.FeatureVersion1)
	h.SetCommon(virtio.CommonDriverFeatureSelect, 4, 0)
	h.SetCommon(virtio.CommonDriverFeature, 4, 1<<3)
	if v := h.Common(virtio.CommonDriverFeature, 4); v != 0 {
		t.Errorf("driver features changed after FEATURES_OK: %#x", v)
	}
	// DRIVER_OK without FEATURES_OK is a driver error.
	h.SetStatus(0)
	h.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusDriverOK)
	if s := h.Status(); s&virtio.StatusNeedsReset == 0 {
		t.Errorf("status %#x: DRIVER_OK without FEATURES_OK accepted", s)
	}
}

// TestEchoMSIX runs requests on both queues, direct and indirect, with
// MSI-X interrupts, through the MMIO notification path.
func TestEchoMSIX(t *testing.T) {
	h := virtiotest.New(t, newEcho(), virtiotest.Options{})
	qs := h.Init(interruptFeatures(), 16, 8)
	for i := range 40 { // wraps both rings
		q := qs[i%2]
		fired := h.Router.Fired(q.Index)
		msg := "hello from queue " + string(rune('0'+q.Index))
		if got := echo(t, h, q, msg); got != msg {
			t.Fatalf("echo %q, got %q", msg, got)
		}
		if !h.Router.WaitFired(q.Index, fired, waitTime) {
			t.Fatalf("no MSI-X interrupt on vector %d (request %d, metrics %+v)", q.Index, i, h.Transport.Metrics())
		}
	}
	in, out := h.Alloc(64, 8), h.Alloc(64, 8)
	_ = h.Mem.Write(in, []byte("indirect"))
	head := qs[0].AddIndirect(virtiotest.Buf{Addr: in, Len: 8}, virtiotest.Buf{Addr: out, Len: 8, Write: true})
	qs[0].Publish(head)
	h.Notify(0)
	if id, n, ok := qs[0].WaitUsed(waitTime); !ok || id != head || n != 8 {
		t.Fatalf("indirect request: %v id %d len %d", ok, id, n)
	}
	if m := h.Transport.Metrics(); m.MMIONotifies == 0 || m.MSIXInterrupts == 0 || m.INTxInterrupts != 0 {
		t.Errorf("metrics %+v", m)
	}
	if h.INTx.Any() {
		t.Error("INTx asserted while MSI-X is enabled")
	}
}

// TestEchoINTx: without MSI-X, used buffers set ISR bit 0 and assert
// INTx; reading the ISR clears both.
func TestEchoINTx(t *testing.T) {
	for _, noMSIX := range []bool{false, true} {
		h := virtiotest.New(t, newEcho(), virtiotest.Options{NoMSIX: noMSIX})
		if !h.Negotiate(interruptFeatures()) {
			t.Fatal("FEATURES_OK refused")
		}
		q := h.SetupQueue(0, 8, virtio.NoVector, false)
		h.DriverOK()
		for range 3 {
			if got := echo(t, h, q, "intx"); got != "intx" {
				t.Fatalf("echo: %q", got)
			}
			// The interrupt follows the used index: wait for it.
			for end := time.Now().Add(waitTime); !h.INTx.Any() && time.Now().Before(end); {
				time.Sleep(50 * time.Microsecond)
			}
			if !h.INTx.Any() || h.ConfigRead16(pci.RegStatus)&pci.StatusINTx == 0 {
				t.Fatal("INTx not asserted")
			}
			if isr := h.ISR(); isr != virtio.ISRQueue {
				t.Fatalf("ISR %#x, want the queue bit", isr)
			}
			if h.INTx.Any() || h.ConfigRead16(pci.RegStatus)&pci.StatusINTx != 0 {
				t.Fatal("INTx still asserted after the ISR read")
			}
		}
	}
}

// TestIOEventFDRegistration: ioeventfds at DRIVER_OK on each enabled
// queue's notification address, following the BAR when the guest moves
// it, gone after a reset.
func TestIOEventFDRegistration(t *testing.T) {
	h := virtiotest.New(t, newEcho(), virtiotest.Options{IOEventFDs: true})
	if n := len(h.IOEvents.Addrs()); n != 0 {
		t.Fatalf("%d ioeventfds before DRIVER_OK", n)
	}
	qs := h.Init(features(), 16, 16)
	addrs := h.IOEvents.Addrs()
	for i := range 2 {
		if _, ok := addrs[h.BAR+virtio.NotifyOffset+uint64(i)*virtio.NotifyOffMultiplier]; !ok {
			t.Errorf("no ioeventfd for queue %d in %v", i, addrs)
		}
	}
	if got := echo(t, h, qs[1], "via ioeventfd"); got != "via ioeventfd" {
		t.Fatal(got)
	}
	if m := h.Transport.Metrics(); m.MMIONotifies != 0 {
		t.Errorf("%d MMIO notifications despite the ioeventfd", m.MMIONotifies)
	}
	// The guest moves BAR 4 (decoding off, new address, decoding on).
	cmd := h.ConfigRead16(pci.RegCommand)
	h.SetCommand(cmd &^ pci.CmdMemory)
	if n := len(h.IOEvents.Addrs()); n != 0 {
		t.Errorf("%d ioeventfds while the BAR does not decode", n)
	}
	newBAR := h.BAR + 0x100000
	h.ConfigWrite32(pci.RegBAR0+4*virtio.VirtioBAR, uint32(newBAR)|0xC)
	h.ConfigWrite32(pci.RegBAR0+4*virtio.VirtioBAR+4, uint32(newBAR>>32))
	h.SetCommand(cmd)
	h.BAR = newBAR
	addrs = h.IOEvents.Addrs()
	if _, ok := addrs[newBAR+virtio.NotifyOffset]; !ok || len(addrs) != 2 {
		t.Errorf("after the move: %v", addrs)
	}
	if got := echo(t, h, qs[0], "moved"); got != "moved" {
		t.Fatal(got)
	}
	h.SetStatus(0)
	if n := len(h.IOEvents.Addrs()); n != 0 {
		t.Errorf("%d ioeventfds after reset", n)
	}
}

// TestResetTearsDown: a reset stops the workers, forgets every queue and
// the negotiation, and a new initialisation works; no goroutine is left.
func TestResetTearsDown(t *testing.T) {
	d := newEcho()
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	before := runtime.NumGoroutine()
	for cycle := range 20 {
		qs := h.Init(features(), 16, 16)
		if got := echo(t, h, qs[cycle%2], "cycle"); got != "cycle" {
			t.Fatal(got)
		}
		h.SetStatus(0)
		if s := h.Status(); s != 0 {
			t.Fatalf("status %#x after reset", s)
		}
		h.SetCommon(virtio.CommonQueueSelect, 2, 0)
		if e, s, v, a := h.Common(virtio.CommonQueueEnable, 2), h.Common(virtio.CommonQueueSize, 2),
			h.Common(virtio.CommonQueueMSIXVector, 2), h.Common(virtio.CommonQueueDesc, 8); e != 0 || s != 16 || v != virtio.NoVector || a != 0 {
			t.Fatalf("queue 0 after reset: enable %d size %d vector %#x desc %#x", e, s, v, a)
		}
		if v := h.Common(virtio.CommonConfigMSIXVector, 2); v != virtio.NoVector {
			t.Fatalf("config vector %#x after reset", v)
		}
		h.SetCommon(virtio.CommonDriverFeatureSelect, 4, 1)
		if f := h.Common(virtio.CommonDriverFeature, 4); f != 0 {
			t.Fatalf("driver features %#x after reset", f)
		}
	}
	if !settle(before) {
		t.Errorf("goroutines: %d before, %d after 20 init/reset cycles", before, runtime.NumGoroutine())
	}
	if int(d.activated.Load()) != 20 || d.resets.Load() < 20 {
		t.Errorf("activated %d, reset %d", d.activated.Load(), d.resets.Load())
	}
	// A request made available after the reset is not processed.
	handled := d.handled.Load()
	h.Notify(0)
	time.Sleep(20 * time.Millisecond)
	if d.handled.Load() != handled {
		t.Error("a reset device processed a request")
	}
}

// settle waits for the goroutine count to come back to n (goroutines
// that are ending need a moment to be gone).
func settle(n int) bool {
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if runtime.NumGoroutine() <= n {
			return true
		}
	}
	return false
}

// TestQueueSetupValidation: layouts that cannot work set DEVICE_NEEDS_RESET
// at DRIVER_OK (with a configuration interrupt) instead of activating.
func TestQueueSetupValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		apply func(h *virtiotest.Harness)
	}{
		{"size not a power of two", func(h *virtiotest.Harness) { h.SetCommon(virtio.CommonQueueSize, 2, 12) }},
		{"size 0", func(h *virtiotest.Harness) { h.SetCommon(virtio.CommonQueueSize, 2, 0) }},
		{"size above the maximum", func(h *virtiotest.Harness) { h.SetCommon(virtio.CommonQueueSize, 2, 32) }},
		{"misaligned descriptor table", func(h *virtiotest.Harness) { h.SetCommon(virtio.CommonQueueDesc, 8, 0x100008) }},
		{"misaligned device ring", func(h *virtiotest.Harness) { h.SetCommon(virtio.CommonQueueDevice, 8, 0x100002) }},
		{"driver ring outside RAM", func(h *virtiotest.Harness) { h.SetCommon(virtio.CommonQueueDriver, 8, 1<<40) }},
		{"rings across the end of RAM", func(h *virtiotest.Harness) { h.SetCommon(virtio.CommonQueueDevice, 8, 16<<20-64) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newEcho()
			h := virtiotest.New(t, d, virtiotest.Options{})
			if !h.Negotiate(features()) {
				t.Fatal("FEATURES_OK")
			}
			h.EnableMSIX()
			h.SetCommon(virtio.CommonConfigMSIXVector, 2, 2)
			h.SetupQueue(0, 16, 0, true)
			// Disable-then-reprogram is not allowed, so program queue 1
			// badly instead.
			h.SetCommon(virtio.CommonQueueSelect, 2, 1)
			h.SetCommon(virtio.CommonQueueSize, 2, 16)
			h.SetCommon(virtio.CommonQueueDesc, 8, 0x200000)
			h.SetCommon(virtio.CommonQueueDriver, 8, 0x201000)
			h.SetCommon(virtio.CommonQueueDevice, 8, 0x202000)
			tc.apply(h)
			h.SetCommon(virtio.CommonQueueEnable, 2, 1)
			fired := h.Router.Fired(2)
			h.DriverOK()
			if s := h.Status(); s&virtio.StatusNeedsReset == 0 {
				t.Fatalf("status %#x: bad layout accepted", s)
			}
			if d.activated.Load() != 0 {
				t.Error("the device was activated")
			}
			if !h.Router.WaitFired(2, fired, waitTime) {
				t.Error("no configuration interrupt")
			}
			// A reset recovers.
			qs := h.Init(features(), 16, 16)
			if got := echo(t, h, qs[1], "ok"); got != "ok" {
				t.Fatal(got)
			}
		})
	}
}

// TestBogusDescriptors: each way a guest can corrupt a ring ends in
// DEVICE_NEEDS_RESET and a configuration interrupt, never a crash or a
// write outside RAM; a reset brings the device back.
func TestBogusDescriptors(t *testing.T) {
	const memSize = 16 << 20
	for _, tc := range []struct {
		name  string
		build func(h *virtiotest.Harness, q *virtiotest.DriverQueue)
	}{
		{"address outside RAM", func(h *virtiotest.Harness, q *virtiotest.DriverQueue) {
			q.WriteDesc(q.Desc, 0, memSize-4, 16, virtio.DescFWrite, 0)
			q.Publish(0)
		}},
		{"address in the MMIO hole", func(h *virtiotest.Harness, q *virtiotest.DriverQueue) {
			q.WriteDesc(q.Desc, 0, 0xFEE00000, 4, virtio.DescFWrite, 0)
			q.Publish(0)
		}},
		{"loop", func(h *virtiotest.Harness, q *virtiotest.DriverQueue) {
			buf := h.Alloc(16, 8)
			q.WriteDesc(q.Desc, 0, buf, 16, virtio.DescFNext, 1)
			q.WriteDesc(q.Desc, 1, buf, 16, virtio.DescFNext, 0)
			q.Publish(0)
		}},
		{"indirect table that recurses", func(h *virtiotest.Harness, q *virtiotest.DriverQueue) {
			table := h.Alloc(16, 16)
			q.WriteDesc(table, 0, table, 16, virtio.DescFIndirect, 0)
			q.WriteDesc(q.Desc, 0, table, 16, virtio.DescFIndirect, 0)
			q.Publish(0)
		}},
		{"length that overflows", func(h *virtiotest.Harness, q *virtiotest.DriverQueue) {
			q.WriteDesc(q.Desc, 0, 0xFFFFFFFFFFFFFF00, 0x200, 0, 0)
			q.Publish(0)
		}},
		{"readable after writable", func(h *virtiotest.Harness, q *virtiotest.DriverQueue) {
			buf := h.Alloc(16, 8)
			q.WriteDesc(q.Desc, 0, buf, 8, virtio.DescFWrite|virtio.DescFNext, 1)
			q.WriteDesc(q.Desc, 1, buf, 8, 0, 0)
			q.Publish(0)
		}},
		{"head index past the queue", func(h *virtiotest.Harness, q *virtiotest.DriverQueue) {
			q.Publish(q.Size)
		}},
		{"next index past the queue", func(h *virtiotest.Harness, q *virtiotest.DriverQueue) {
			q.WriteDesc(q.Desc, 0, h.Alloc(8, 8), 8, virtio.DescFNext, 0xFFFF)
			q.Publish(0)
		}},
		{"available index jump", func(h *virtiotest.Harness, q *virtiotest.DriverQueue) {
			q.SetAvailIdx(h.Transport.Queues()[0].AvailIdx() + q.Size + 1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newEcho()
			h := virtiotest.New(t, d, virtiotest.Options{MemSize: memSize})
			qs := h.Init(features(), 16, 16)
			if got := echo(t, h, qs[0], "before"); got != "before" {
				t.Fatal(got)
			}
			h.ISR()
			fired := h.Router.Fired(2)
			tc.build(h, qs[0])
			h.Notify(0)
			deadline := time.Now().Add(waitTime)
			for h.Status()&virtio.StatusNeedsReset == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if s := h.Status(); s&virtio.StatusNeedsReset == 0 {
				t.Fatalf("status %#x: no DEVICE_NEEDS_RESET", s)
			}
			if !h.Router.WaitFired(2, fired, waitTime) {
				t.Error("no configuration interrupt")
			}
			if isr := h.ISR(); isr&virtio.ISRConfig == 0 {
				t.Errorf("ISR %#x", isr)
			}
			// The other queue stops too: the whole device is broken.
			in := h.Alloc(4, 4)
			qs[1].AddAndPublish(virtiotest.Buf{Addr: in, Len: 4}, virtiotest.Buf{Addr: in, Len: 4, Write: true})
			h.Notify(1)
			if _, _, ok := qs[1].WaitUsed(20 * time.Millisecond); ok {
				t.Error("a broken device completed a request")
			}
			if m := h.Transport.Metrics(); m.DeviceErrors != 1 {
				t.Errorf("%d device errors counted", m.DeviceErrors)
			}
			qs = h.Init(features(), 16, 16)
			if got := echo(t, h, qs[0], "after"); got != "after" {
				t.Fatalf("after reset: %q", got)
			}
		})
	}
}

func TestNoDMAWithoutBusMaster(t *testing.T) {
	d := newEcho()
	h := virtiotest.New(t, d, virtiotest.Options{})
	qs := h.Init(features(), 16, 16)
	h.SetCommand(h.ConfigRead16(pci.RegCommand) &^ pci.CmdBusMaster)
	in := h.Alloc(4, 4)
	qs[0].AddAndPublish(virtiotest.Buf{Addr: in, Len: 4}, virtiotest.Buf{Addr: in, Len: 4, Write: true})
	h.Notify(0)
	if _, _, ok := qs[0].WaitUsed(20 * time.Millisecond); ok {
		t.Fatal("request completed with bus mastering off")
	}
	h.SetCommand(h.ConfigRead16(pci.RegCommand) | pci.CmdBusMaster)
	h.Notify(0)
	if _, _, ok := qs[0].WaitUsed(waitTime); !ok {
		t.Fatal("request not completed once bus mastering is on")
	}
}

// TestPCICfgCapability reads and writes the common configuration through
// the PCI configuration access capability, as SeaBIOS does for a BAR
// above 4 GiB.
func TestPCICfgCapability(t *testing.T) {
	h := virtiotest.New(t, newEcho(), virtiotest.Options{})
	c := h.FindCap(pci.CapIDVendor, virtio.PCICapPCICfg)
	access := func(off uint32, n uint32) {
		h.ConfigWrite32(c+4, virtio.VirtioBAR) // bar (and padding)
		h.ConfigWrite32(c+8, off)
		h.ConfigWrite32(c+12, n)
	}
	access(virtio.CommonNumQueues, 2)
	if v := h.ConfigRead16(c + 16); v != 2 {
		t.Errorf("num_queues through the capability: %d", v)
	}
	access(virtio.CommonDeviceStatus, 1)
	h.ConfigWrite32(c+16, virtio.StatusAcknowledge)
	if s := h.Status(); s != virtio.StatusAcknowledge {
		t.Errorf("status written through the capability: %#x", s)
	}
	// Misaligned or oversized windows do nothing.
	access(virtio.CommonNumQueues+1, 2)
	h.ConfigWrite32(c+16, 0)
	access(virtio.CommonDeviceStatus, 3)
	h.ConfigWrite32(c+16, 0)
	if s := h.Status(); s != virtio.StatusAcknowledge {
		t.Errorf("status %#x after refused accesses", s)
	}
}

// TestActivateError: a device that fails to start leaves the device
// needing a reset.
func TestActivateError(t *testing.T) {
	d := newEcho()
	d.activate = func(virtio.Activation) error { return errors.New("backend gone") }
	h := virtiotest.New(t, d, virtiotest.Options{})
	h.Negotiate(features())
	h.SetupQueue(0, 16, virtio.NoVector, true)
	h.DriverOK()
	if s := h.Status(); s&virtio.StatusNeedsReset == 0 {
		t.Fatalf("status %#x", s)
	}
}

// TestConcurrentDriverAndDevice hammers the registers from several
// "vCPUs" while the device processes requests (for -race).
func TestConcurrentDriverAndDevice(t *testing.T) {
	d := newEcho()
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	qs := h.Init(features(), 16, 16)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				h.Common(virtio.CommonDeviceStatus, 1)
				h.DeviceConfig(0, 8)
				h.SetCommon(virtio.CommonQueueSelect, 2, 1)
				h.Transport.ConfigChanged()
			}
		}()
	}
	for range 200 {
		if got := echo(t, h, qs[0], "x"); got != "x" {
			t.Fatal(got)
		}
	}
	close(stop)
	wg.Wait()
}
