// Package devices holds the buses that route vCPU port-I/O and MMIO exits to
// device models, and the small interfaces device models are given instead of
// the VM: an interrupt line, guest memory, power events.
package devices

// Device is a model that answers accesses to the address range it was
// inserted at. offset is relative to the start of that range; len(data) is
// the access width (1, 2, 4 or 8 bytes). Devices are called from several
// vCPU threads and lock their own state. A device never panics on a value
// the guest chose: it ignores the access, or marks itself failed, and logs.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// IRQLine is a wire into the interrupt controller (a GSI of the in-kernel
// IOAPIC/PIC). SetLevel(true) asserts it; edge-triggered users pulse it.
type IRQLine interface {
	SetLevel(high bool) error
}

// IRQLineFunc adapts a function to IRQLine.
type IRQLineFunc func(high bool) error

// SetLevel calls f.
func (f IRQLineFunc) SetLevel(high bool) error { return f(high) }

// PowerEvents are the machine-level actions devices can request: the ACPI
// PM block, the i8042 reset line, the reset register and the debug-exit port
// use them. The VM decides what each means (reboot or exit, S3 or S5).
type PowerEvents interface {
	// PowerOff is a clean guest poweroff (ACPI S5).
	PowerOff()
	// Reset is a platform reset request from the guest.
	Reset(reason string)
	// DebugExit ends the VM with a status chosen by the guest.
	DebugExit(status int)
}
