package legacy

import (
	"log/slog"
	"sync"

	"github.com/kvmm/kvmm/devices"
)

// Status register bits (port 0x64 read).
const (
	i8042StatusOBF      = 1 << 0 // output buffer full: data at port 0x60
	i8042StatusSYS      = 1 << 2 // system flag: POST passed (from the command byte)
	i8042StatusCmd      = 1 << 3 // last write was to 0x64 (A2 line)
	i8042StatusUnlocked = 1 << 4 // keyboard not inhibited by the key lock
	i8042StatusAux      = 1 << 5 // the output buffer holds aux (mouse) data
)

// Command byte (controller RAM byte 0) bits.
const (
	i8042CtrKbdInt = 1 << 0 // IRQ 1 on keyboard data
	i8042CtrAuxInt = 1 << 1 // IRQ 12 on aux data
	i8042CtrSys    = 1 << 2
	i8042CtrKbdDis = 1 << 4
	i8042CtrAuxDis = 1 << 5
	i8042CtrXlate  = 1 << 6
	// i8042CtrDefault is what a BIOS that found a keyboard and no mouse
	// leaves: keyboard interrupt, POST passed, aux disabled, translation.
	i8042CtrDefault = i8042CtrKbdInt | i8042CtrSys | i8042CtrAuxDis | i8042CtrXlate
)

// Output port bits (commands 0xD0/0xD1).
const (
	i8042OutReset  = 1 << 0 // CPU reset line, active low
	i8042OutA20    = 1 << 1
	i8042OutKbdOBF = 1 << 4 // mirrors OBF for keyboard data
	i8042OutAuxOBF = 1 << 5 // mirrors OBF for aux data
	// i8042OutDefault: reset not asserted, A20 enabled, clock and data
	// lines high.
	i8042OutDefault = i8042OutReset | i8042OutA20 | 0xCC
)

// Controller commands (port 0x64 writes).
const (
	i8042CmdReadRAM     = 0x20 // 0x20-0x3F: read RAM byte (0x20: command byte)
	i8042CmdWriteRAM    = 0x60 // 0x60-0x7F: write RAM byte (0x60: command byte)
	i8042CmdAuxDisable  = 0xA7
	i8042CmdAuxEnable   = 0xA8
	i8042CmdAuxTest     = 0xA9
	i8042CmdSelfTest    = 0xAA
	i8042CmdKbdTest     = 0xAB
	i8042CmdKbdDisable  = 0xAD
	i8042CmdKbdEnable   = 0xAE
	i8042CmdReadOutput  = 0xD0
	i8042CmdWriteOutput = 0xD1
	i8042CmdWriteKbdBuf = 0xD2
	i8042CmdWriteAuxBuf = 0xD3
	i8042CmdWriteAux    = 0xD4
	i8042CmdPulse       = 0xF0 // 0xF0-0xFF: pulse output lines whose bit is 0
)

// Controller replies.
const (
	i8042SelfTestOK  = 0x55
	i8042PortTestOK  = 0x00
	i8042RAMBytes    = 32
	i8042RAMIndexMax = i8042RAMBytes - 1
)

// I8042 is enough of the PS/2 controller for an OS to find it, run its
// self tests, and reset the machine through it (Linux reboot=k pulses the
// reset line with command 0xFE). No keyboard or mouse is attached: bytes
// sent to them are dropped, and the guest's driver times out as it would
// on an empty port.
//
// The controller answers two one-byte ports that are not adjacent (0x61
// between them is the PC speaker/PIT gate, which KVM's in-kernel PIT
// serves), so it is mapped as two devices sharing its state: Data() at
// layout.I8042Port and Command() at layout.I8042CmdPort.
type I8042 struct {
	power devices.PowerEvents
	log   *slog.Logger
	limit logLimiter

	mu       sync.Mutex
	ram      [i8042RAMBytes]byte // ram[0] is the command byte
	lastCmd  bool                // the A2 status bit
	out      byte
	outFull  bool
	outAux   bool
	outPort  byte
	pending  byte // command waiting for its data byte at 0x60; 0 = none
	kbdIRQ   irqWire
	auxIRQ   irqWire
	dataView i8042Data
	cmdView  i8042Cmd
}

// NewI8042 returns the controller as a BIOS leaves it. power receives the
// reset requests (nil: they are logged and dropped); log nil discards.
func NewI8042(power devices.PowerEvents, log *slog.Logger) *I8042 {
	c := &I8042{power: power, log: orDiscard(log), outPort: i8042OutDefault}
	c.ram[0] = i8042CtrDefault
	c.dataView.c, c.cmdView.c = c, c
	return c
}

// Data returns the data port (layout.I8042Port, I8042PortSize bytes).
func (c *I8042) Data() devices.Device { return &c.dataView }

// Command returns the status/command port (layout.I8042CmdPort,
// I8042PortSize bytes).
func (c *I8042) Command() devices.Device { return &c.cmdView }

// SetIRQs wires the keyboard (ISA IRQ 1) and aux (IRQ 12) interrupt lines,
// raised while the output buffer holds a byte from that side and the
// command byte enables its interrupt. Unwired (the default), a guest that
// polls works, but Linux's i8042 driver waits 250 ms at boot for an IRQ 12
// that never comes after its aux loopback test, then gives up on the aux
// port (i8042.noaux on the command line skips that test).
func (c *I8042) SetIRQs(kbd, aux devices.IRQLine) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kbdIRQ = irqWire{line: kbd, high: c.kbdIRQ.high}
	c.auxIRQ = irqWire{line: aux, high: c.auxIRQ.high}
}

// OutputPort returns the last value of the controller's output port.
func (c *I8042) OutputPort() byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outPort
}

type i8042Data struct{ c *I8042 }

type i8042Cmd struct{ c *I8042 }

// Read returns the output buffer and empties it. A wider access reaches
// ports past 0x60 that are not the controller's: those bytes read 0xFF.
func (d *i8042Data) Read(offset uint64, data []byte) {
	c := d.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		data[i] = 0xFF
		if inRange(offset, i, I8042PortSize) {
			// An empty buffer still reads its last byte, as the chip's
			// latch does.
			data[i] = c.out
			c.outFull, c.outAux = false, false
			c.updateIRQs()
		}
	}
}

// Write sends a byte to the device the pending command names, or to the
// keyboard.
func (d *i8042Data) Write(offset uint64, data []byte) {
	c := d.c
	reset := ""
	c.mu.Lock()
	for i, b := range data {
		if inRange(offset, i, I8042PortSize) {
			if r := c.writeData(b); r != "" {
				reset = r
			}
		}
	}
	c.mu.Unlock()
	c.reset(reset)
}

// Read returns the status register.
func (p *i8042Cmd) Read(offset uint64, data []byte) {
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		data[i] = 0xFF
		if inRange(offset, i, I8042PortSize) {
			data[i] = c.status()
		}
	}
}

// Write runs a controller command.
func (p *i8042Cmd) Write(offset uint64, data []byte) {
	c := p.c
	reset := ""
	c.mu.Lock()
	for i, b := range data {
		if inRange(offset, i, I8042PortSize) {
			if r := c.command(b); r != "" {
				reset = r
			}
		}
	}
	c.mu.Unlock()
	c.reset(reset)
}

// status is the status register. IBF is never set: every byte is taken the
// moment it is written, so a guest's wait for an empty input buffer (as
// Linux's kb_wait before 0xFE) ends at once.
func (c *I8042) status() byte {
	st := byte(i8042StatusUnlocked)
	if c.ram[0]&i8042CtrSys != 0 {
		st |= i8042StatusSYS
	}
	if c.lastCmd {
		st |= i8042StatusCmd
	}
	if c.outFull {
		st |= i8042StatusOBF
		if c.outAux {
			st |= i8042StatusAux
		}
	}
	return st
}

// output puts a reply in the output buffer, replacing an unread one (the
// chip has a one-byte buffer).
func (c *I8042) output(b byte, aux bool) {
	c.out, c.outFull, c.outAux = b, true, aux
	c.updateIRQs()
}

// command runs a controller command; it returns a reset reason when the
// command pulses the CPU reset line. Called with c.mu held.
func (c *I8042) command(cmd byte) (reset string) {
	c.lastCmd = true
	c.pending = 0
	switch {
	case cmd >= i8042CmdReadRAM && cmd <= i8042CmdReadRAM+i8042RAMIndexMax:
		c.output(c.ram[cmd-i8042CmdReadRAM], false)
	case cmd >= i8042CmdWriteRAM && cmd <= i8042CmdWriteRAM+i8042RAMIndexMax:
		c.pending = cmd
	case cmd == i8042CmdAuxDisable:
		c.ram[0] |= i8042CtrAuxDis
	case cmd == i8042CmdAuxEnable:
		c.ram[0] &^= i8042CtrAuxDis
	case cmd == i8042CmdAuxTest, cmd == i8042CmdKbdTest:
		c.output(i8042PortTestOK, false)
	case cmd == i8042CmdSelfTest:
		c.output(i8042SelfTestOK, false)
	case cmd == i8042CmdKbdDisable:
		c.ram[0] |= i8042CtrKbdDis
	case cmd == i8042CmdKbdEnable:
		c.ram[0] &^= i8042CtrKbdDis
	case cmd == i8042CmdReadOutput:
		v := c.outPort &^ (i8042OutKbdOBF | i8042OutAuxOBF)
		if c.outFull && !c.outAux {
			v |= i8042OutKbdOBF
		}
		if c.outFull && c.outAux {
			v |= i8042OutAuxOBF
		}
		c.output(v, false)
	case cmd == i8042CmdWriteOutput, cmd == i8042CmdWriteKbdBuf,
		cmd == i8042CmdWriteAuxBuf, cmd == i8042CmdWriteAux:
		c.pending = cmd
	case cmd >= i8042CmdPulse:
		// Low bits 0-3 select the output lines to pulse low; line 0 is
		// the CPU reset (0xFE pulses it alone, 0xFF pulses nothing).
		if cmd&i8042OutReset == 0 {
			return "i8042 reset"
		}
	default:
		c.limit.log(c.log, slog.LevelDebug, "unsupported i8042 command ignored", "command", cmd)
	}
	c.updateIRQs() // the command byte may have changed
	return ""
}

// writeData takes a byte written to port 0x60. Called with c.mu held.
func (c *I8042) writeData(b byte) (reset string) {
	c.lastCmd = false
	cmd := c.pending
	c.pending = 0
	switch {
	case cmd >= i8042CmdWriteRAM && cmd <= i8042CmdWriteRAM+i8042RAMIndexMax:
		c.ram[cmd-i8042CmdWriteRAM] = b
		c.updateIRQs()
	case cmd == i8042CmdWriteOutput:
		c.outPort = b
		if b&i8042OutA20 == 0 {
			// KVM has no A20 mask; a guest that needs the 1 MiB wrap
			// is not one we boot.
			c.limit.log(c.log, slog.LevelDebug, "guest disabled A20 through the i8042; A20 stays enabled")
		}
		if b&i8042OutReset == 0 {
			return "i8042 output port reset"
		}
	case cmd == i8042CmdWriteKbdBuf:
		c.output(b, false)
	case cmd == i8042CmdWriteAuxBuf:
		c.output(b, true)
	case cmd == i8042CmdWriteAux:
		// To the mouse, which is not there.
	default:
		// To the keyboard, which is not there.
	}
	return ""
}

// updateIRQs drives IRQ 1 and 12 from the output buffer and the command
// byte's interrupt enables. Called with c.mu held.
func (c *I8042) updateIRQs() {
	kbd := c.outFull && !c.outAux && c.ram[0]&i8042CtrKbdInt != 0
	aux := c.outFull && c.outAux && c.ram[0]&i8042CtrAuxInt != 0
	if err := c.kbdIRQ.set(kbd); err != nil {
		c.limit.log(c.log, slog.LevelWarn, "i8042 keyboard interrupt", "err", err)
	}
	if err := c.auxIRQ.set(aux); err != nil {
		c.limit.log(c.log, slog.LevelWarn, "i8042 aux interrupt", "err", err)
	}
}

// reset forwards a reset request, outside c.mu so the VM may do anything.
func (c *I8042) reset(reason string) {
	if reason == "" {
		return
	}
	if c.power == nil {
		c.limit.log(c.log, slog.LevelWarn, "guest reset through the i8042 but no power handler is wired; ignored", "reason", reason)
		return
	}
	c.limit.log(c.log, slog.LevelInfo, "guest pulsed the i8042 reset line", "reason", reason)
	c.power.Reset(reason)
}
