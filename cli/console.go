package cli

import (
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/vmm"
)

const ctrlA = 0x01

// attachConsole feeds the terminal's input to the guest's serial port. On a
// terminal it switches to raw mode so every key reaches the guest, and
// Ctrl-A x stops the VM (Ctrl-A Ctrl-A sends one Ctrl-A). The returned
// function restores the terminal.
func attachConsole(in *os.File, vm *vmm.VM) (restore func()) {
	restore = func() {}
	if in == nil {
		return restore
	}
	fd := int(in.Fd())
	if old, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		raw := *old
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err == nil {
			restore = func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }
		}
	}
	go pumpInput(in, vm)
	return restore
}

func pumpInput(in *os.File, vm *vmm.VM) {
	buf := make([]byte, 256)
	escape := false
	for {
		n, err := in.Read(buf)
		if n > 0 {
			out := make([]byte, 0, n)
			for _, c := range buf[:n] {
				switch {
				case escape && c == 'x':
					vm.Stop("Ctrl-A x")
					return
				case escape:
					escape = false
					out = append(out, c)
				case c == ctrlA:
					escape = true
				default:
					out = append(out, c)
				}
			}
			if !deliver(vm, out) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// deliver hands bytes to the guest, waiting while its receive FIFO is full;
// false when the VM has ended.
func deliver(vm *vmm.VM, b []byte) bool {
	for len(b) > 0 {
		n := vm.SendInput(b)
		b = b[n:]
		if len(b) == 0 {
			break
		}
		select {
		case <-vm.Done():
			return false
		case <-time.After(time.Millisecond):
		}
	}
	return true
}
