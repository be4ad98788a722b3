package pci

import (
	"encoding/binary"
	"fmt"
)

// Bridge is a conventional PCI-to-PCI bridge (class 0x0604, header type 1)
// with an SSVID capability and no interrupt of its own. The guest (or
// Root.Enumerate, acting as firmware) programs its bus numbers and its
// I/O, memory and prefetchable windows; configuration cycles for buses
// secondary..subordinate are forwarded to the secondary bus (type 1 ->
// type 0 when the target is the secondary bus itself), and memory and I/O
// reach the functions behind it only inside the windows, with the
// bridge's own decoders enabled in its command register (positive decode).
type Bridge struct {
	cfg       *Config
	secondary *Bus
}

// PCIConfig makes the bridge a Function.
func (b *Bridge) PCIConfig() *Config { return b.cfg }

// Secondary is the bus behind the bridge.
func (b *Bridge) Secondary() *Bus { return b.secondary }

// bridgeSSVIDCapLen is the subsystem vendor ID capability: ID, next,
// 2 reserved bytes, subsystem vendor ID, subsystem ID.
const bridgeSSVIDCapLen = 8

func newBridgeConfig() (*Config, error) {
	c, err := newConfig(Header{VendorID: VendorRedHat, DeviceID: bridgeDeviceID, Class: ClassPCIBridge}, HeaderTypeBridge)
	if err != nil {
		return nil, err
	}
	for _, r := range []int{RegPrimaryBus, RegSecondaryBus, RegSubordinateBus, RegSecLatency} {
		c.wmask[r] = 0xFF
	}
	// 16-bit I/O decoding (low nibble 0): x86 has 64 KiB of ports, so the
	// upper I/O registers stay read-only zeros.
	c.wmask[RegIOBase], c.wmask[RegIOLimit] = 0xF0, 0xF0
	binary.LittleEndian.PutUint16(c.w1c[RegSecStatus:], statusW1C)
	c.setMask16(RegMemBase, 0xFFF0)
	c.setMask16(RegMemLimit, 0xFFF0)
	c.setMask16(RegPrefBase, 0xFFF0)
	c.setMask16(RegPrefLimit, 0xFFF0)
	c.setMask32(RegPrefBaseUpper, 0xFFFFFFFF)
	c.setMask32(RegPrefLimitUpper, 0xFFFFFFFF)
	c.setMask16(RegBridgeControl, bridgeControlWritable)
	// The prefetchable window decodes 64-bit addresses, so it can sit
	// above 4 GiB where 64-bit prefetchable BARs go.
	c.data[RegPrefBase], c.data[RegPrefLimit] = prefRange64, prefRange64
	closeWindows(c)
	ssvid := make([]byte, bridgeSSVIDCapLen)
	binary.LittleEndian.PutUint16(ssvid[4:], SubsysVendorQEMU)
	binary.LittleEndian.PutUint16(ssvid[6:], SubsysIDQEMU)
	if _, err := c.addCapability(Capability{ID: CapIDSSVID, Data: ssvid}); err != nil {
		return nil, err
	}
	return c, nil
}

// closeWindows sets every window's base above its limit: nothing is
// forwarded until firmware or the OS programs them. Direct stores: this is
// the reset value, not a guest write.
func closeWindows(c *Config) {
	c.data[RegIOBase], c.data[RegIOLimit] = 0xF0, 0x00
	binary.LittleEndian.PutUint16(c.data[RegMemBase:], 0xFFF0)
	binary.LittleEndian.PutUint16(c.data[RegMemLimit:], 0x0000)
	binary.LittleEndian.PutUint16(c.data[RegPrefBase:], 0xFFF0|prefRange64)
	binary.LittleEndian.PutUint16(c.data[RegPrefLimit:], prefRange64)
	binary.LittleEndian.PutUint32(c.data[RegPrefBaseUpper:], 0)
	binary.LittleEndian.PutUint32(c.data[RegPrefLimitUpper:], 0)
}

// bridgeState is a snapshot of the registers that steer forwarding.
type bridgeState struct {
	primary, secondary, subordinate uint8
	cmd                             uint16
	io, mem, pref                   Range // empty (End < Start) when closed
}

func (b *Bridge) state() bridgeState {
	c := b.cfg
	c.mu.Lock()
	defer c.mu.Unlock()
	s := bridgeState{
		primary:     c.data[RegPrimaryBus],
		secondary:   c.data[RegSecondaryBus],
		subordinate: c.data[RegSubordinateBus],
		cmd:         c.u16(RegCommand),
	}
	s.io = Range{uint64(c.data[RegIOBase]&0xF0) << 8, uint64(c.data[RegIOLimit]&0xF0)<<8 | (ioWindowGranularity - 1)}
	s.mem = Range{uint64(c.u16(RegMemBase)&0xFFF0) << 16, uint64(c.u16(RegMemLimit)&0xFFF0)<<16 | (memWindowGranularity - 1)}
	s.pref = Range{
		uint64(c.u16(RegPrefBase)&0xFFF0)<<16 | uint64(c.u32(RegPrefBaseUpper))<<32,
		uint64(c.u16(RegPrefLimit)&0xFFF0)<<16 | (memWindowGranularity - 1) | uint64(c.u32(RegPrefLimitUpper))<<32,
	}
	return s
}

// forwards reports whether the bridge passes a memory (io=false) or I/O
// access to [base, base+size) from its primary to its secondary side.
func (s bridgeState) forwards(io bool, base, size uint64) bool {
	if io {
		return s.cmd&CmdIO != 0 && s.io.Contains(base, size)
	}
	return s.cmd&CmdMemory != 0 && (s.mem.Contains(base, size) || s.pref.Contains(base, size))
}

// routes reports whether a configuration cycle for bus goes through.
func (s bridgeState) routes(bus uint8) bool {
	return s.secondary != 0 && s.secondary <= bus && bus <= s.subordinate
}

// setWindows programs the windows through configuration writes, as
// firmware does. An empty range closes that window.
func (b *Bridge) setWindows(io, mem, pref Range) {
	c := b.cfg
	if io.Size() > 0 {
		c.write8(RegIOBase, uint8(io.Start>>8))
		c.write8(RegIOLimit, uint8(io.End>>8))
	} else {
		c.write8(RegIOBase, 0xF0)
		c.write8(RegIOLimit, 0)
	}
	if mem.Size() > 0 {
		c.write16(RegMemBase, uint16(mem.Start>>16))
		c.write16(RegMemLimit, uint16(mem.End>>16))
	} else {
		c.write16(RegMemBase, 0xFFF0)
		c.write16(RegMemLimit, 0)
	}
	if pref.Size() > 0 {
		c.write16(RegPrefBase, uint16(pref.Start>>16))
		c.write16(RegPrefLimit, uint16(pref.End>>16))
		c.write32(RegPrefBaseUpper, uint32(pref.Start>>32))
		c.write32(RegPrefLimitUpper, uint32(pref.End>>32))
	} else {
		c.write16(RegPrefBase, 0xFFF0)
		c.write16(RegPrefLimit, 0)
		c.write32(RegPrefBaseUpper, 0)
		c.write32(RegPrefLimitUpper, 0)
	}
}

// newHostBridge is device 0:0.0, the host bridge the CF8/CFC and ECAM
// mechanisms belong to. It has no BARs: its windows are fixed and
// described to the OS by ACPI (PCI0._CRS) rather than by registers.
func newHostBridge() (*Config, error) {
	c, err := NewConfig(Header{VendorID: VendorIntel, DeviceID: hostBridgeDeviceID, Class: ClassHostBridge,
		SubsysVendorID: SubsysVendorQEMU, SubsysID: SubsysIDQEMU})
	if err != nil {
		return nil, fmt.Errorf("host bridge: %w", err)
	}
	return c, nil
}
