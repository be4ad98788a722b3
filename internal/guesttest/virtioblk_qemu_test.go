package guesttest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// virtioImage writes a raw image whose sector s holds byte i = i*7 + s*13,
// the pattern virtioblk.S checks in sector 1.
func virtioImage(t *testing.T, name string, sectors int) string {
	t.Helper()
	img := make([]byte, sectors*512)
	for s := range sectors {
		for i := range 512 {
			img[s*512+i] = byte(i*7 + s*13)
		}
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestVirtioBlkQEMU runs virtioblk under QEMU, its oracle: modern-only
// virtio-blk-pci functions on q35 (SeaBIOS places their BARs), one on the
// root bus and, in the bridge variant, a read-only one behind a
// pci-bridge. QEMU accepts FEATURES_OK with an unoffered bit (it masks
// it), so the guest runs without virtioblk.strict here.
func TestVirtioBlkQEMU(t *testing.T) {
	requireQEMU(t)
	for _, bridge := range []bool{false, true} {
		name := "root-bus"
		if bridge {
			name = "pci-bridge"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := BuildT(t, "virtioblk")
			a := virtioImage(t, "a.img", 2048)
			args := []string{
				"-drive", "if=none,id=d0,file=" + a + ",format=raw",
				"-device", "virtio-blk-pci,drive=d0,disable-legacy=on,serial=kvmm-disk0",
			}
			var b string
			var origB []byte
			if bridge {
				b = virtioImage(t, "b.img", 2048)
				origB, _ = os.ReadFile(b)
				args = append(args,
					"-device", "pci-bridge,id=br1,chassis_nr=1,bus=pcie.0",
					"-drive", "if=none,id=d1,file="+b+",format=raw,readonly=on",
					"-device", "virtio-blk-pci,drive=d1,bus=br1,disable-legacy=on,serial=kvmm-disk1-ro")
			}
			res := runQEMU(t, firmwareTimeout, path, "q35", 1, args...)
			expectVerdict(t, res, "virtioblk", true)
			expectLines(t, res,
				"virtio-blk 00:01.0 (MSI-X)\n",
				"  num_queues 1 through the BAR and the PCI cfg capability\n",
				`  serial "kvmm-disk0"`,
				"  MSI-X: vector 0x00000041 pending in the local APIC\n",
				"  read sector 1: the host's pattern (indirect descriptors)\n",
				"  wrote sector 2\n  flush: ok\n  read back sector 2: ok\n",
				"  reset (status 0) and set up again: sector 1 ok\n",
				"  head index 16 of 16: device_status 0x0000004f (DEVICE_NEEDS_RESET)\n",
				"  after a reset the disk works again\n")
			n := "1"
			if bridge {
				n = "2"
				expectLines(t, res,
					"virtio-blk 01:00.0 (INTx)\n",
					`  serial "kvmm-disk1-ro"`,
					"  capacity 2048 sectors, read-only\n",
					"  INTx: PCI status interrupt bit set, ISR 0x00000001, cleared by the ISR read\n",
					"  write to the read-only disk: IOERR, as it should\n")
			}
			expectLines(t, res, "virtioblk: "+n+" disks passed\n")
			if strings.Contains(res.Serial, "FAIL") {
				t.Error("guest reported a failure")
			}
			want := make([]byte, 512)
			for i := range want {
				want[i] = byte(i*3 + 0x5A)
			}
			if img, _ := os.ReadFile(a); !bytes.Equal(img[1024:1536], want) {
				t.Error("the host file lacks the sector the guest wrote")
			}
			if bridge {
				if img, _ := os.ReadFile(b); !bytes.Equal(img, origB) {
					t.Error("the read-only image changed")
				}
			}
		})
	}
}
