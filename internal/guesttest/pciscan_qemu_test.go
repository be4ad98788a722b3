package guesttest

import (
	"strings"
	"testing"
)

// TestPCIScanQEMU runs pciscan under QEMU, its oracle, on q35 (MCFG/ECAM,
// ICH9's multi-function device at 00:1f) with a PCI-to-PCI bridge and a
// modern-only virtio-rng behind it, so that the guest finds a secondary bus
// with BARs that SeaBIOS placed inside the bridge's windows.
func TestPCIScanQEMU(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	path := BuildT(t, "pciscan")
	res := runQEMU(t, firmwareTimeout, path, "q35", 1,
		"-device", "pci-bridge,id=br1,chassis_nr=1,bus=pcie.0",
		"-device", "virtio-rng-pci,bus=br1,disable-legacy=on")
	expectVerdict(t, res, "pciscan", true)
	expectLines(t, res,
		"ECAM 0xb0000000 buses 0-255\n",
		"pci 00:00.0 8086:29c0 class 060000 type 00\n",
		"pci 00:1f.0 8086:2918 class 060100 type 00\n", // multi-function slot
		"pci 00:1f.2 8086:2922 class 010601 type 00\n",
		"class 060400 type 01\n",
		"buses 00->01..01\n",
		"bus 01\n",
		"pci 01:00.0 1af4:1044 class 00ff00 type 00\n",
		" mem64 pref 0x",
		"  BARs inside the windows of the bridge to bus 01\n",
		"pciscan: 6 functions on 2 buses, ")
	if strings.Contains(res.Serial, "FAIL") {
		t.Errorf("guest reported a failure")
	}
}
