package vmm

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvmm/kvmm/devices/pci"
	"github.com/kvmm/kvmm/internal/guesttest"
	"github.com/kvmm/kvmm/layout"
)

// pciTestRegs is a BAR region for the test function: reads return a
// pattern, writes are counted.
type pciTestRegs struct {
	mu     sync.Mutex
	writes int
}

func (r *pciTestRegs) Read(_ uint64, data []byte) {
	for i := range data {
		data[i] = 0x5A
	}
}

func (r *pciTestRegs) Write(uint64, []byte) {
	r.mu.Lock()
	r.writes++
	r.mu.Unlock()
}

// newTestPCIFunction is a function with one BAR of every kind, MSI-X and a
// virtio-format vendor capability, defined here only (kvmm itself has no
// such device): it gives the guest something behind the bridge to size and
// check against the bridge's windows.
func newTestPCIFunction(root *pci.Root) (*pci.Config, error) {
	c, err := pci.NewConfig(pci.Header{VendorID: 0x1AF4, DeviceID: 0x107F, Revision: 1, Class: 0x00FF00,
		SubsysVendorID: 0x1AF4, SubsysID: 0x107F, InterruptPin: pci.PinA})
	if err != nil {
		return nil, err
	}
	regs := &pciTestRegs{}
	for _, b := range []struct {
		i   int
		bar pci.BAR
	}{
		{0, pci.BAR{Kind: pci.BARMem32, Size: 0x1000, Regions: []pci.Region{{Name: "regs", Size: 0x100, Dev: regs}}}},
		{1, pci.BAR{Kind: pci.BARMem32, Size: 0x1000}},
		{2, pci.BAR{Kind: pci.BARMem64, Size: 0x4000, Prefetchable: true, Regions: []pci.Region{{Name: "cfg", Size: 0x4000, Dev: regs}}}},
		{4, pci.BAR{Kind: pci.BARIO, Size: 0x20, Regions: []pci.Region{{Name: "ports", Size: 0x20, Dev: regs}}}},
	} {
		if err := c.SetBAR(b.i, b.bar); err != nil {
			return nil, err
		}
	}
	m, err := pci.NewMSIX(2, root.Router(), slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	if _, err := c.AddMSIX(m, pci.MSIXLayout{TableBAR: 1, PBABAR: 1, PBAOffset: 0x800}); err != nil {
		return nil, err
	}
	// struct virtio_pci_cap: common config in BAR 2, offset 0, 0x100 bytes.
	if _, err := c.AddCapability(pci.Capability{ID: pci.CapIDVendor,
		Data: []byte{0, 0, 16, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}}); err != nil {
		return nil, err
	}
	return c, nil
}

// bootPCIGuest runs cfg and returns the VM too, for its PCI dump.
func bootPCIGuest(t *testing.T, cfg Config) (*VM, string, Result) {
	t.Helper()
	requireKVM(t)
	var out SerialBuffer
	vm, err := New(cfg, Options{Serial: &out, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := vm.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v (result %+v)\nserial:\n%s", err, res, out.String())
	}
	return vm, out.String(), res
}

// lspciDecode runs the host's lspci on a dump (skipping without pciutils)
// and checks that it decoded everything: no unknown capability, no broken
// chain, no complaint. allowed lists output lspci prints for something it
// does not name although the dump is right; it is left out of the checks.
func lspciDecode(t *testing.T, dump string, allowed ...string) string {
	t.Helper()
	lspci, err := exec.LookPath("lspci")
	if err != nil {
		t.Skipf("lspci not installed (Debian package pciutils): %v", err)
	}
	path := filepath.Join(t.TempDir(), "pci.dump")
	if err := os.WriteFile(path, []byte(dump), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(lspci, "-F", path, "-vvv")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("lspci: %v\n%s", err, stderr.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if l != "" && !strings.Contains(l, "libkmod") { // module lookup, not the dump
			t.Errorf("lspci: %s", l)
		}
	}
	out := stdout.String()
	checked := out
	for _, a := range allowed {
		checked = strings.ReplaceAll(checked, a, "")
	}
	for _, bad := range []string{"<?>", "nknown", "<broken", "chain broken", "<unreadable>", "rror"} {
		if strings.Contains(checked, bad) {
			t.Errorf("lspci output contains %q", bad)
		}
	}
	return out
}

// TestPCIScanGuest boots pciscan with a bridge and a test function behind
// it: the guest scans both buses through CF8/CFC and ECAM (found through
// the MCFG table), sizes every BAR and checks the bridge's windows against
// them. Then the host-side dump of the same topology goes through lspci.
func TestPCIScanGuest(t *testing.T) {
	cfg := guestConfig(t, "pciscan", 1)
	cfg.PCI.Bridges = 1
	var fn *pci.Config
	cfg.PCI.testHook = &pciTestHook{attach: func(root *pci.Root, bridges []*pci.Bridge) error {
		f, err := newTestPCIFunction(root)
		if err != nil {
			return err
		}
		fn = f
		_, err = bridges[0].Secondary().Add(f)
		return err
	}}
	vm, out, res := bootPCIGuest(t, cfg)
	t.Logf("guest serial:\n%s", out)
	mmio64 := pciMMIO64Window(uint64(cfg.Memory)).Start
	expect(t, out, res, guesttest.PassStatus,
		"ECAM 0xe0000000 buses 0-255\n",
		"pci 00:00.0 8086:29c0 class 060000 type 00\n",
		"pci 00:01.0 1b36:0001 class 060400 type 01\n",
		"bridge 00:01.0 buses 00->01..01\n",
		"  io window 0x000000000000c000-0x000000000000cfff\n",
		"  mem window 0x00000000c0000000-0x00000000c00fffff\n",
		"  pref window "+pciHex64(mmio64)+"-"+pciHex64(mmio64+0xFFFFF)+"\n",
		"pci 01:00.0 1af4:107f class 00ff00 type 00\n",
		"  bar0 mem32 0x00000000c0000000 size 0x0000000000001000\n",
		"  bar1 mem32 0x00000000c0001000 size 0x0000000000001000\n",
		"  bar2 mem64 pref "+pciHex64(mmio64)+" size 0x0000000000004000\n",
		"  bar4 io 0x000000000000c000 size 0x0000000000000020\n",
		"  BARs inside the windows of the bridge to bus 01\n",
		"pciscan: 3 functions on 2 buses, ",
		guesttest.PassLine("pciscan"))

	// The guest sized every BAR and restored it: the regions are mapped
	// again where they were.
	vm.mu.Lock()
	m := vm.m
	vm.mu.Unlock()
	for i, want := range map[int]uint64{0: 0xC0000000, 2: mmio64, 4: 0xC000} {
		if got, ok := m.pci.root.BARAddress(fn, i); !ok || got != want {
			t.Errorf("after the scan BAR %d decodes at %#x (%v), want %#x", i, got, ok, want)
		}
	}

	// What the guest saw, as lspci decodes the dump.
	var dump bytes.Buffer
	if err := m.pciDump(&dump, false); err != nil {
		t.Fatal(err)
	}
	decoded := lspciDecode(t, dump.String())
	t.Logf("lspci -F <dump> -vvv:\n%s", decoded)
	for _, want := range []string{
		"00:00.0 Host bridge: Intel Corporation 82G33/G31/P35/P31 Express DRAM Controller",
		"00:01.0 PCI bridge: Red Hat, Inc. QEMU PCI-PCI bridge (prog-if 00 [Normal decode])",
		"Bus: primary=00, secondary=01, subordinate=01, sec-latency=0",
		"I/O behind bridge: c000-cfff [size=4K] [16-bit]",
		"Memory behind bridge: c0000000-c00fffff [size=1M] [32-bit]",
		"Capabilities: [40] Subsystem: Red Hat, Inc. Device 1100",
		"01:00.0 Unclassified device [00ff]: Red Hat, Inc. Device 107f (rev 01)",
		// Slot 0 pin A behind the bridge in slot 1: pin A of slot 1.
		"Interrupt: pin A routed to IRQ 17",
		"Region 0: Memory at c0000000 (32-bit, non-prefetchable)",
		"Region 4: I/O ports at c000",
		"Capabilities: [40] MSI-X: Enable- Count=2 Masked-",
		"Vector table: BAR=1 offset=00000000",
		"PBA: BAR=1 offset=00000800",
		"Capabilities: [4c] Vendor Specific Information: VirtIO: CommonCfg",
	} {
		if !strings.Contains(decoded, want) {
			t.Errorf("lspci output lacks %q", want)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] `).FindAllString(decoded, -1)); n != 3 {
		t.Errorf("lspci lists %d functions, want 3", n)
	}
}

func pciHex64(v uint64) string {
	const digits = "0123456789abcdef"
	b := []byte("0x0000000000000000")
	for i := 17; i >= 2; i-- {
		b[i] = digits[v&0xF]
		v >>= 4
	}
	return string(b)
}

// TestPCIScanGuestDefault: every VM has the host bridge and ECAM; without
// bridges the guest finds bus 0 with the host bridge alone.
func TestPCIScanGuestDefault(t *testing.T) {
	cfg := guestConfig(t, "pciscan", 1)
	_, out, res := bootPCIGuest(t, cfg)
	expect(t, out, res, guesttest.PassStatus,
		"ECAM 0xe0000000 buses 0-255\n",
		"pci 00:00.0 8086:29c0 class 060000 type 00\n",
		"pciscan: 1 functions on 1 buses, ",
		guesttest.PassLine("pciscan"))
}

func TestPCIConfigValidate(t *testing.T) {
	for _, n := range []int{-1, MaxPCIBridges + 1} {
		if err := (PCIConfig{Bridges: n}).Validate(); err == nil {
			t.Errorf("%d bridges accepted", n)
		}
	}
	if err := (PCIConfig{Bridges: MaxPCIBridges}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestPCIMMIO64Window(t *testing.T) {
	for _, tc := range []struct {
		mem, start uint64
	}{
		{128 * layout.MiB, 64 * layout.GiB},
		{3 * layout.GiB, 64 * layout.GiB},
		{100 * layout.GiB, 4*layout.GiB + 97*layout.GiB},      // RAM ends at 101 GiB
		{100*layout.GiB + 4096, 4*layout.GiB + 98*layout.GiB}, // rounded up to 1 GiB
	} {
		w := pciMMIO64Window(tc.mem)
		if w.Start != tc.start || w.Size() != 64*layout.GiB {
			t.Errorf("memory %#x: window %#x-%#x, want start %#x, 64 GiB", tc.mem, w.Start, w.End, tc.start)
		}
	}
}
