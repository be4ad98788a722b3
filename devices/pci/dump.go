package pci

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sort"
)

// Dump writes the configuration space of every function a configuration
// cycle can reach, in the text format of `lspci -x` (256 bytes per
// function) or, with extended, `lspci -xxxx` (4096 bytes, as ECAM reads
// them). The host's `lspci -F <file>` reads it back and decodes it.
// Capability read hooks do not run: dumping has no side effects.
func (r *Root) Dump(w io.Writer, extended bool) error {
	type entry struct {
		bus, dev, fn uint8
		data         []byte
	}
	var entries []entry
	r.mu.Lock()
	var rec func(b *Bus, num uint8)
	rec = func(b *Bus, num uint8) {
		for s := range b.fns {
			for fn, f := range b.fns[s] {
				if f == nil {
					continue
				}
				// Only what the bus numbers make reachable, as lspci would
				// find it by scanning.
				if r.lookup(num, uint8(s), uint8(fn)) == f {
					data := f.PCIConfig().Bytes()
					e := entry{bus: num, dev: uint8(s), fn: uint8(fn), data: data[:]}
					if extended {
						e.data = append(e.data, make([]byte, ExtConfigSize-ConfigSize)...)
					}
					entries = append(entries, e)
				}
				if br, ok := f.(*Bridge); ok {
					if st := br.state(); st.secondary > num {
						rec(br.secondary, st.secondary)
					}
				}
			}
		}
	}
	rec(r.bus0, 0)
	r.mu.Unlock()

	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		if a.bus != b.bus {
			return a.bus < b.bus
		}
		if a.dev != b.dev {
			return a.dev < b.dev
		}
		return a.fn < b.fn
	})
	bw := bufio.NewWriter(w)
	for _, e := range entries {
		fmt.Fprintf(bw, "%02x:%02x.%d %s\n", e.bus, e.dev, e.fn, describe(e.data))
		writeHex(bw, e.data)
		fmt.Fprintln(bw)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("PCI dump: %w", err)
	}
	return nil
}

// writeHex prints 16 bytes a row, "xx: " offsets (three digits from 0x100
// on, as lspci does).
func writeHex(w io.Writer, data []byte) {
	for off := 0; off < len(data); off += 16 {
		fmt.Fprintf(w, "%02x:", off)
		for _, b := range data[off:min(off+16, len(data))] {
			fmt.Fprintf(w, " %02x", b)
		}
		fmt.Fprintln(w)
	}
}

// describe is lspci's one-line description: class name, vendor and device
// names, revision. Only the IDs kvmm uses have names here; lspci prints
// "Device xxxx" for IDs it does not know, and so does this.
func describe(cfg []byte) string {
	vendor := binary.LittleEndian.Uint16(cfg[RegVendorID:])
	device := binary.LittleEndian.Uint16(cfg[RegDeviceID:])
	class := uint16(cfg[RegClassProg+2])<<8 | uint16(cfg[RegClassProg+1])
	cls, ok := classNames[class]
	if !ok {
		cls = fmt.Sprintf("Class %04x", class)
	}
	var who string
	if v, ok := vendorNames[vendor]; ok {
		d, ok := deviceNames[uint32(vendor)<<16|uint32(device)]
		if !ok {
			d = fmt.Sprintf("Device %04x", device)
		}
		who = v + " " + d
	} else {
		who = fmt.Sprintf("Device %04x:%04x", vendor, device)
	}
	s := cls + ": " + who
	if rev := cfg[RegRevision]; rev != 0 {
		s += fmt.Sprintf(" (rev %02x)", rev)
	}
	return s
}

var classNames = map[uint16]string{
	0x0000: "Non-VGA unclassified device",
	0x0100: "SCSI storage controller",
	0x0106: "SATA controller",
	0x0200: "Ethernet controller",
	0x0300: "VGA compatible controller",
	0x0500: "RAM memory",
	0x0600: "Host bridge",
	0x0601: "ISA bridge",
	0x0604: "PCI bridge",
	0x0780: "Communication controller",
	0x0880: "System peripheral",
	0x0c05: "SMBus",
	0x00ff: "Unclassified device",
}

var vendorNames = map[uint16]string{
	VendorIntel:  "Intel Corporation",
	VendorRedHat: "Red Hat, Inc.",
	0x1AF4:       "Red Hat, Inc.",
}

var deviceNames = map[uint32]string{
	VendorIntel<<16 | hostBridgeDeviceID: "82G33/G31/P35/P31 Express DRAM Controller",
	VendorRedHat<<16 | bridgeDeviceID:    "QEMU PCI-PCI bridge",
	0x1AF4<<16 | 0x1041:                  "Virtio 1.0 network device",
	0x1AF4<<16 | 0x1042:                  "Virtio 1.0 block device",
	0x1AF4<<16 | 0x1043:                  "Virtio 1.0 console",
	0x1AF4<<16 | 0x1044:                  "Virtio 1.0 RNG",
	0x1AF4<<16 | 0x1045:                  "Virtio 1.0 balloon",
}
