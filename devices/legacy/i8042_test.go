package legacy

import (
	"bytes"
	"slices"
	"testing"
)

// i8042Command writes a controller command and, for commands with a
// parameter, its data byte; it returns the reply if one is expected.
func i8042Command(c *I8042, cmd byte, param []byte, reply bool) (byte, bool) {
	outb(c.Command(), 0, cmd)
	for _, p := range param {
		outb(c.Data(), 0, p)
	}
	if !reply {
		return 0, true
	}
	if inb(c.Command(), 0)&i8042StatusOBF == 0 {
		return 0, false
	}
	return inb(c.Data(), 0), true
}

func TestI8042Commands(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cmd   byte
		param []byte
		want  byte
	}{
		{"self test", i8042CmdSelfTest, nil, i8042SelfTestOK},
		{"keyboard interface test", i8042CmdKbdTest, nil, 0x00},
		{"aux interface test", i8042CmdAuxTest, nil, 0x00},
		{"read command byte", i8042CmdReadRAM, nil, i8042CtrDefault},
		{"read output port", i8042CmdReadOutput, nil, i8042OutDefault},
		{"write keyboard buffer", i8042CmdWriteKbdBuf, []byte{0xAB}, 0xAB},
		{"write aux buffer", i8042CmdWriteAuxBuf, []byte{0x5A}, 0x5A},
	} {
		c := NewI8042(&fakePower{}, nil)
		got, ok := i8042Command(c, tc.cmd, tc.param, true)
		if !ok || got != tc.want {
			t.Errorf("%s: reply %#02x (present %v), want %#02x", tc.name, got, ok, tc.want)
		}
		if st := inb(c.Command(), 0); st&i8042StatusOBF != 0 {
			t.Errorf("%s: OBF still set after reading the reply", tc.name)
		}
	}
}

func TestI8042Status(t *testing.T) {
	c := NewI8042(nil, nil)
	if st := inb(c.Command(), 0); st != i8042StatusSYS|i8042StatusUnlocked {
		t.Errorf("initial status %#02x, want SYS|UNLOCKED", st)
	}
	outb(c.Command(), 0, i8042CmdKbdEnable)
	if st := inb(c.Command(), 0); st&i8042StatusCmd == 0 || st&0x02 != 0 {
		t.Errorf("status after a command %#02x: want A2 set, IBF clear", st)
	}
	outb(c.Command(), 0, i8042CmdWriteAuxBuf)
	outb(c.Data(), 0, 0x11)
	if st := inb(c.Command(), 0); st != i8042StatusSYS|i8042StatusUnlocked|i8042StatusOBF|i8042StatusAux {
		t.Errorf("status with aux data %#02x", st)
	}
	if got := inb(c.Data(), 0); got != 0x11 {
		t.Errorf("aux data %#02x", got)
	}
	if got := inb(c.Data(), 0); got != 0x11 {
		t.Errorf("empty buffer reads %#02x, want the last byte", got)
	}
	// Command byte without SYS: the status flag follows it.
	i8042Command(c, i8042CmdWriteRAM, []byte{0x00}, false)
	if st := inb(c.Command(), 0); st&i8042StatusSYS != 0 {
		t.Errorf("SYS still set: %#02x", st)
	}
}

func TestI8042CommandByte(t *testing.T) {
	c := NewI8042(nil, nil)
	for _, tc := range []struct {
		cmd  byte
		want byte
	}{
		{i8042CmdAuxEnable, i8042CtrDefault &^ i8042CtrAuxDis},
		{i8042CmdAuxDisable, i8042CtrDefault},
		{i8042CmdKbdDisable, i8042CtrDefault | i8042CtrKbdDis},
		{i8042CmdKbdEnable, i8042CtrDefault},
	} {
		outb(c.Command(), 0, tc.cmd)
		if got, _ := i8042Command(c, i8042CmdReadRAM, nil, true); got != tc.want {
			t.Errorf("after %#02x: command byte %#02x, want %#02x", tc.cmd, got, tc.want)
		}
	}
	i8042Command(c, i8042CmdWriteRAM, []byte{0x47}, false)
	if got, _ := i8042Command(c, i8042CmdReadRAM, nil, true); got != 0x47 {
		t.Errorf("command byte %#02x, want 0x47", got)
	}
	i8042Command(c, i8042CmdWriteRAM+5, []byte{0x99}, false)
	if got, _ := i8042Command(c, i8042CmdReadRAM+5, nil, true); got != 0x99 {
		t.Errorf("RAM[5] = %#02x, want 0x99", got)
	}
	// A data byte with no command pending goes to the (absent) keyboard.
	outb(c.Data(), 0, 0xF2)
	if got, _ := i8042Command(c, i8042CmdReadRAM, nil, true); got != 0x47 {
		t.Errorf("keyboard byte changed the command byte to %#02x", got)
	}
}

func TestI8042Reset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cmd   byte
		param []byte
		want  []string
	}{
		{"pulse reset (reboot=k)", 0xFE, nil, []string{"i8042 reset"}},
		{"pulse all lines", 0xF0, nil, []string{"i8042 reset"}},
		{"pulse line 1 only", 0xFD, nil, nil},
		{"pulse nothing", 0xFF, nil, nil},
		{"output port, reset low", i8042CmdWriteOutput, []byte{0xFE}, []string{"i8042 output port reset"}},
		{"output port, reset high", i8042CmdWriteOutput, []byte{0xDF}, nil},
		{"output port, A20 off", i8042CmdWriteOutput, []byte{0xDD}, nil},
		{"reset value as plain data", 0xAE, []byte{0xFE}, nil},
	} {
		p := &fakePower{}
		c := NewI8042(p, nil)
		i8042Command(c, tc.cmd, tc.param, false)
		resets, exits, offs := p.snapshot()
		if !slices.Equal(resets, tc.want) || len(exits) != 0 || offs != 0 {
			t.Errorf("%s: resets %q exits %v poweroffs %d, want resets %q", tc.name, resets, exits, offs, tc.want)
		}
	}
	NewI8042(nil, nil).Command().Write(0, []byte{0xFE}) // no handler: logged, no panic
}

func TestI8042OutputPort(t *testing.T) {
	c := NewI8042(&fakePower{}, nil)
	i8042Command(c, i8042CmdWriteOutput, []byte{0xDF}, false)
	if got := c.OutputPort(); got != 0xDF {
		t.Errorf("OutputPort = %#02x, want 0xDF", got)
	}
	if got, _ := i8042Command(c, i8042CmdReadOutput, nil, true); got != 0xCF {
		t.Errorf("output port reads %#02x, want 0xCF (OBF mirrors clear)", got)
	}
}

// TestI8042LinuxAuxCheck replays the AUX part of Linux's i8042_check_aux
// with the interrupt lines wired: the loopback byte comes back as aux data
// and raises IRQ 12 when the command byte enables it.
func TestI8042LinuxAuxCheck(t *testing.T) {
	kbd, aux := &fakeIRQ{}, &fakeIRQ{}
	c := NewI8042(nil, nil)
	c.SetIRQs(kbd, aux)
	// AUX_LOOP with interrupts off.
	outb(c.Command(), 0, i8042CmdWriteAuxBuf)
	outb(c.Data(), 0, 0x5A)
	if st := inb(c.Command(), 0); st&(i8042StatusOBF|i8042StatusAux) != i8042StatusOBF|i8042StatusAux {
		t.Fatalf("status %#02x: aux loopback data not flagged AUXDATA", st)
	}
	if got := inb(c.Data(), 0); got != 0x5A {
		t.Fatalf("aux loopback returned %#02x", got)
	}
	if h := aux.take(); len(h) != 0 {
		t.Errorf("IRQ 12 driven %v with AUXINT clear", h)
	}
	// Enable the aux port and its interrupt, then the IRQ test.
	outb(c.Command(), 0, i8042CmdAuxEnable)
	i8042Command(c, i8042CmdWriteRAM, []byte{i8042CtrKbdInt | i8042CtrAuxInt | i8042CtrSys}, false)
	outb(c.Command(), 0, i8042CmdWriteAuxBuf)
	outb(c.Data(), 0, 0xA5)
	if !aux.level() || kbd.level() {
		t.Errorf("IRQ12 %v IRQ1 %v after aux data, want true false", aux.level(), kbd.level())
	}
	if got := inb(c.Data(), 0); got != 0xA5 || aux.level() {
		t.Errorf("read %#02x; IRQ12 still %v", got, aux.level())
	}
	// Keyboard-side replies raise IRQ 1.
	i8042Command(c, i8042CmdSelfTest, nil, false)
	if !kbd.level() {
		t.Error("IRQ1 low with a controller reply and KBDINT set")
	}
	inb(c.Data(), 0)
	if h := kbd.take(); !slices.Equal(h, []bool{true, false}) {
		t.Errorf("IRQ1 levels %v, want [true false]", h)
	}
}

func TestI8042WideAccess(t *testing.T) {
	c := NewI8042(&fakePower{}, nil)
	outb(c.Command(), 0, i8042CmdSelfTest)
	got := make([]byte, 4)
	c.Data().Read(0, got)
	if want := []byte{i8042SelfTestOK, 0xFF, 0xFF, 0xFF}; !bytes.Equal(got, want) {
		t.Errorf("32-bit data read % x, want % x", got, want)
	}
	c.Command().Read(1, got[:1])
	if got[0] != 0xFF {
		t.Errorf("status read past the port = %#02x", got[0])
	}
	c.Command().Write(1, []byte{0xFE}) // past the port: not a command
	c.Command().Write(^uint64(0), []byte{0xFE, 0xFE})
	c.Command().Write(0, nil)
	if resets, _, _ := c.power.(*fakePower).snapshot(); len(resets) != 0 {
		t.Errorf("out-of-range writes reset the machine: %q", resets)
	}
}
