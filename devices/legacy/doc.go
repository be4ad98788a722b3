// Package legacy models the PC platform devices a guest expects at fixed
// ISA I/O ports: the COM1 16550A UART, the MC146818 CMOS RTC, the i8042
// controller (for its reset line), QEMU's isa-debug-exit port and the port
// 0x80 POST-code sink.
//
// Every model is a devices.Device, mapped on the port-I/O bus as:
//
//	device     base                  size
//	Serial     layout.COM1Port       SerialPortSize
//	RTC        layout.RTCPort        RTCPortSize
//	I8042      layout.I8042Port      I8042PortSize  ((*I8042).Data())
//	           layout.I8042CmdPort   I8042PortSize  ((*I8042).Command())
//	DebugExit  layout.DebugExitPort  DebugExitPortSize
//	POST       layout.POSTPort       POSTPortSize
//
// The UART, RTC, i8042 and POST port are byte-wide ISA devices: a wider
// IN/OUT reaches them as consecutive byte accesses, as the chipset splits
// it on real hardware, and bytes past the device's range read as 0xFF and
// are dropped on write. The debug-exit port alone takes the access as one
// value, as QEMU's isa-debug-exit does.
package legacy

// Sizes of the I/O ranges the devices decode.
const (
	SerialPortSize    = 8 // RBR/THR .. SCR
	RTCPortSize       = 2 // index, data
	I8042PortSize     = 1 // each of the data and command/status ports
	DebugExitPortSize = 4 // one 32-bit register
	POSTPortSize      = 1
)
