package vmm

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/internal/guesttest"
)

// virtioTestImage writes a raw image whose sector s holds byte i = i*7 +
// s*13 (what virtioblk.S checks in sector 1).
func virtioTestImage(t *testing.T, sectors int) string {
	t.Helper()
	img := make([]byte, sectors*512)
	for s := range sectors {
		for i := range 512 {
			img[s*512+i] = byte(i*7 + s*13)
		}
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// virtioWritten is the sector 2 the guest writes on disk n.
func virtioWritten(n int) []byte {
	b := make([]byte, 512)
	for i := range b {
		b[i] = byte(i*3 + 0x5A + n)
	}
	return b
}

func intp(v int) *int { return &v }

// TestVirtioBlkGuest boots virtioblk with a read-write disk on bus 0 and a
// read-only one behind a bridge on bus 1: the guest finds both through
// PCI, sets them up as Linux does (MSI-X on the first, INTx on the
// second), reads the host's pattern, writes and flushes, checks a write to
// the read-only disk fails, resets and sets up again, and breaks each disk
// with a bogus head index. Then the host file holds the written sector,
// the read-only one is untouched, the notifications came through
// ioeventfds, and lspci decodes what the guest saw.
func TestVirtioBlkGuest(t *testing.T) {
	a, b := virtioTestImage(t, 2048), virtioTestImage(t, 2048)
	origB, _ := os.ReadFile(b)
	cfg := guestConfig(t, "virtioblk", 1)
	cfg.Cmdline = "virtioblk.strict"
	cfg.PCI.Bridges = 1
	cfg.Disks = []DiskConfig{{Path: a, Serial: "kvmm-disk0"}, {Path: b, ReadOnly: true, Serial: "kvmm-disk1-ro", Bus: intp(1)}}
	before := runtime.NumGoroutine()
	vm, out, res := bootPCIGuest(t, cfg)
	t.Logf("guest serial:\n%s", out)
	mmio64 := pciMMIO64Window(uint64(cfg.Memory)).Start
	expect(t, out, res, guesttest.PassStatus,
		"virtio-blk 00:02.0 (MSI-X)\n",
		"  caps: common bar 4+0x00000000, notify +0x00003000 x4, isr +0x00001000, device +0x00002000 len 36, msix 0x",
		// Above 4 GiB, in the 64-bit window: reached through the guest's
		// page tables.
		"  BAR4 at "+pciHex64(mmio64)[:12],
		"  num_queues 1 through the BAR and the PCI cfg capability\n",
		"  unoffered feature bit 63: FEATURES_OK refused\n",
		"  device features 0x0000000130000244, driver features 0x0000000130000244\n",
		"  queue 0: max size 256, using 16, notify at 0x00000000\n",
		"  capacity 2048 sectors\n",
		`  serial "kvmm-disk0"`,
		"  MSI-X: vector 0x00000041 pending in the local APIC\n",
		"  read sector 1: the host's pattern (indirect descriptors)\n",
		"  wrote sector 2\n  flush: ok\n  read back sector 2: ok\n",
		"  reset (status 0) and set up again: sector 1 ok\n",
		"  head index 16 of 16: device_status 0x0000004f (DEVICE_NEEDS_RESET)\n  configuration change in the ISR\n  after a reset the disk works again\n",
		"virtio-blk 01:00.0 (INTx)\n",
		"  device features 0x0000000130000264, driver features 0x0000000130000264\n",
		"  capacity 2048 sectors, read-only\n",
		`  serial "kvmm-disk1-ro"`,
		"  INTx: PCI status interrupt bit set, ISR 0x00000001, cleared by the ISR read\n",
		"  write to the read-only disk: IOERR, as it should\n",
		"virtioblk: 2 disks passed\n",
		guesttest.PassLine("virtioblk"))

	imgA, _ := os.ReadFile(a)
	if !bytes.Equal(imgA[1024:1536], virtioWritten(0)) {
		t.Error("the host file lacks the sector the guest wrote")
	}
	if imgB, _ := os.ReadFile(b); !bytes.Equal(imgB, origB) {
		t.Error("the read-only image changed")
	}

	vm.mu.Lock()
	m := vm.m
	vm.mu.Unlock()
	ts := m.virtioTransports()
	reported := vm.Metrics(0).Devices
	for _, name := range []string{"virtio-blk0", "virtio-blk1"} {
		tm := ts[name].Metrics()
		if reported[name] != tm {
			t.Errorf("VM.Metrics reports %s as %+v, the transport has %+v", name, reported[name], tm)
		}
		t.Logf("%s: %+v", name, tm)
		// The first setup, the one after a reset, the one after the bogus
		// head; every notification through the ioeventfd.
		if tm.Activations != 3 || tm.DeviceErrors != 1 || tm.MMIONotifies != 0 || tm.IOEventFDRegistrations != 3 || tm.FeaturesRefused != 1 {
			t.Errorf("%s metrics %+v", name, tm)
		}
	}
	if tm := ts["virtio-blk0"].Metrics(); tm.MSIXInterrupts == 0 || tm.INTxInterrupts != 0 {
		t.Errorf("virtio-blk0 (MSI-X) interrupts %+v", tm)
	}
	if tm := ts["virtio-blk1"].Metrics(); tm.INTxInterrupts == 0 || tm.MSIXInterrupts != 0 {
		t.Errorf("virtio-blk1 (INTx) interrupts %+v", tm)
	}
	// The machine is closed: no worker is left.
	for end := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines: %d before the VM, %d after", before, n)
	}

	var dump bytes.Buffer
	if err := m.pciDump(&dump, false); err != nil {
		t.Fatal(err)
	}
	decoded := lspciDecode(t, dump.String(), lspciVirtioUnnamed)
	t.Logf("lspci -F <dump> -vvv:\n%s", decoded)
	for _, want := range []string{
		"00:02.0 SCSI storage controller: Red Hat, Inc. Virtio 1.0 block device (rev 01)",
		"01:00.0 SCSI storage controller: Red Hat, Inc. Virtio 1.0 block device (rev 01)",
		"Subsystem: Red Hat, Inc. Device 1100",
		"Region 1: Memory at c0000000 (32-bit, non-prefetchable)",
		"Region 4: Memory at " + strings.TrimLeft(pciHex64(mmio64)[2:], "0") + " (64-bit, prefetchable)",
		"BAR=4 offset=00003000 size=00000004 multiplier=00000004",
		"Capabilities: [40] Vendor Specific Information: VirtIO: CommonCfg",
		"Vendor Specific Information: VirtIO: Notify",
		"Vendor Specific Information: VirtIO: ISR",
		"Vendor Specific Information: VirtIO: DeviceCfg",
		"MSI-X: Enable+ Count=2 Masked-",
		"MSI-X: Enable- Count=2 Masked-",
		"Vector table: BAR=1 offset=00000000",
		"PBA: BAR=1 offset=00000800",
		"Interrupt: pin A routed to IRQ",
	} {
		if !strings.Contains(decoded, want) {
			t.Errorf("lspci output lacks %q", want)
		}
	}
	// The guest leaves both disks reset, and bus mastering on.
	if n := len(regexp.MustCompile(`Control: I/O- Mem\+ BusMaster\+`).FindAllString(decoded, -1)); n != 2 {
		t.Errorf("%d functions with memory decoding and bus mastering, want the two disks", n)
	}
}

// lspciVirtioUnnamed is what lspci 3.9 prints for the virtio PCI
// configuration access capability (cfg_type 5), which it does not name.
const lspciVirtioUnnamed = "VirtIO: <unknown>"

// TestVirtioBlkGuestMMIONotify runs the same guest without ioeventfds:
// every notification is an MMIO exit that the transport turns into the
// queue's eventfd signal.
func TestVirtioBlkGuestMMIONotify(t *testing.T) {
	a := virtioTestImage(t, 64)
	cfg := guestConfig(t, "virtioblk", 1)
	cfg.Cmdline = "virtioblk.strict"
	cfg.Disks = []DiskConfig{{Path: a, Serial: "mmio"}}
	cfg.virtioNoIOEventFD = true
	vm, out, res := bootPCIGuest(t, cfg)
	expect(t, out, res, guesttest.PassStatus, `  serial "mmio"`, "  read back sector 2: ok\n", guesttest.PassLine("virtioblk"))
	vm.mu.Lock()
	m := vm.m
	vm.mu.Unlock()
	tm := m.virtioTransports()["virtio-blk0"].Metrics()
	// Five requests, a read after the reset, the bogus head, a read after
	// the recovery.
	if tm.IOEventFDRegistrations != 0 || tm.MMIONotifies != 8 {
		t.Errorf("metrics %+v", tm)
	}
	img, _ := os.ReadFile(a)
	if !bytes.Equal(img[1024:1536], virtioWritten(0)) {
		t.Error("the host file lacks the written sector")
	}
}

// TestVirtioDevicesOnBridges: every virtio device kind on the PCI bus the
// config asks for, and lspci's view of them.
func TestVirtioDevicesOnBridges(t *testing.T) {
	cfg := guestConfig(t, "pciscan", 1)
	cfg.PCI.Bridges = 2
	cfg.PCIBus = 2
	cfg.RNG = true
	cfg.Console = ConsoleVirtio
	cfg.Disks = []DiskConfig{{Path: virtioTestImage(t, 8), Bus: intp(0)}, {Path: virtioTestImage(t, 8)}}
	_, out, res := bootPCIGuest(t, cfg)
	expect(t, out, res, guesttest.PassStatus,
		"pci 00:03.0 1af4:1042 class 010000 type 00\n",
		"pci 02:00.0 1af4:1042 class 010000 type 00\n",
		"pci 02:01.0 1af4:1044 class 00ff00 type 00\n",
		"pci 02:02.0 1af4:1043 class 078000 type 00\n",
		"  BARs inside the windows of the bridge to bus 02\n",
		"pciscan: 7 functions on 3 buses, ")
}

func TestParseDisk(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want DiskConfig
		err  string
	}{
		{"a.img", DiskConfig{Path: "a.img"}, ""},
		{"/x/a.img,readonly,serial=abc,bus=2", DiskConfig{Path: "/x/a.img", ReadOnly: true, Serial: "abc", Bus: intp(2)}, ""},
		{"a.img,ro", DiskConfig{Path: "a.img", ReadOnly: true}, ""},
		{"a.img,readonly=false", DiskConfig{Path: "a.img"}, ""},
		{"a.img,serial=", DiskConfig{Path: "a.img"}, ""},
		{"", DiskConfig{}, "empty path"},
		{",readonly", DiskConfig{}, "empty path"},
		{"a.img,bus=x", DiskConfig{}, `bus="x"`},
		{"a.img,readonly=maybe", DiskConfig{}, "readonly"},
		{"a.img,cache=none", DiskConfig{}, `unknown option "cache=none"`},
	} {
		got, err := ParseDisk(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.Path != tc.want.Path || got.ReadOnly != tc.want.ReadOnly || got.Serial != tc.want.Serial ||
			(got.Bus == nil) != (tc.want.Bus == nil) || (got.Bus != nil && *got.Bus != *tc.want.Bus) {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestValidateVirtio(t *testing.T) {
	img := virtioTestImage(t, 8)
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"ok", func(c *Config) { c.Disks = []DiskConfig{{Path: img}}; c.RNG = true; c.Console = ConsoleVirtio }, ""},
		{"bus behind a bridge", func(c *Config) { c.PCI.Bridges = 2; c.Disks = []DiskConfig{{Path: img, Bus: intp(2)}} }, ""},
		{"missing bridge", func(c *Config) { c.Disks = []DiskConfig{{Path: img, Bus: intp(1)}} }, "PCI bus 1 needs 1 PCI-to-PCI bridges (--pci-bridges 1)"},
		{"pci-bus without bridges", func(c *Config) { c.RNG = true; c.PCIBus = 3 }, "pci-bus: PCI bus 3 needs 3"},
		{"negative bus", func(c *Config) { c.Disks = []DiskConfig{{Path: img, Bus: intp(-1)}} }, "PCI bus -1 does not exist"},
		{"no such image", func(c *Config) { c.Disks = []DiskConfig{{Path: filepath.Join(dir, "none")}} }, "no such file"},
		{"a directory", func(c *Config) { c.Disks = []DiskConfig{{Path: dir}} }, "not a regular file or a block device"},
		{"empty path", func(c *Config) { c.Disks = []DiskConfig{{}} }, "empty path"},
		{"same image twice", func(c *Config) { c.Disks = []DiskConfig{{Path: img}, {Path: img, ReadOnly: true}} }, "the same image as disk 0"},
		{"long serial", func(c *Config) { c.Disks = []DiskConfig{{Path: img, Serial: strings.Repeat("s", 21)}} }, "longer than 20 bytes"},
		{"bad console", func(c *Config) { c.Console = "tty" }, `console "tty": want serial or virtio`},
		{"bus 0 full", func(c *Config) {
			for range 32 {
				c.Disks = append(c.Disks, DiskConfig{Path: virtioTestImage(t, 1)})
			}
		}, "PCI bus 0: 32 virtio devices, only 31 free slots"},
	} {
		cfg := DefaultConfig()
		tc.mutate(&cfg)
		err := cfg.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestVirtioConsoleInput: with --console virtio the terminal's input goes
// to the virtio console, not COM1.
func TestVirtioConsoleInput(t *testing.T) {
	requireKVM(t)
	cfg := DefaultConfig()
	cfg.Console = ConsoleVirtio
	vm, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Stop("test")
	if n := vm.SendInput([]byte("hvc0")); n != 4 {
		t.Fatalf("accepted %d", n)
	}
	vm.mu.Lock()
	m := vm.m
	vm.mu.Unlock()
	if m.virtio == nil || m.virtio.console == nil || m.virtio.console.Enqueue(make([]byte, 8192)) != 4096-4 {
		t.Error("the input did not go to the virtio console")
	}
}
