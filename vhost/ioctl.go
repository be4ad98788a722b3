package vhost

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DevicePath is the vhost-net character device.
const DevicePath = "/dev/vhost-net"

// device is the vhost-net character device as NetBackend uses it: open an
// instance, issue ioctls on it, close it. The kernel implementation is
// kernelDevice; tests inject a recording double, because this is the seam
// where the ordering rules of the kernel ABI can be checked without a host
// that has vhost_net.
type device interface {
	open() (fd int, err error)
	// ioctl issues req on fd. arg points to the request's argument struct
	// (nil for argument-less requests); it is an unsafe.Pointer, not a
	// uintptr, so the argument stays alive until the kernel has read it.
	ioctl(fd int, req uintptr, arg unsafe.Pointer) error
	close(fd int) error
}

// kernelDevice is the real /dev/vhost-net (or another node, for tests that
// check the syscall plumbing against a device that rejects every ioctl).
type kernelDevice struct{ path string }

func (d kernelDevice) open() (int, error) {
	fd, err := unix.Open(d.path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", d.path, err)
	}
	return fd, nil
}

func (kernelDevice) ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	return ioctlPtr(fd, req, arg)
}

func (kernelDevice) close(fd int) error { return unix.Close(fd) }

// ioctlPtr issues an ioctl whose argument is a pointer. The conversion to
// uintptr happens in the Syscall call expression, the one place the unsafe
// rules allow it for a pointer the kernel dereferences.
func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
}

// ioctlVal issues an ioctl whose argument is passed by value (TUNSETOFFLOAD).
func ioctlVal(fd int, req uintptr, val uintptr) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, val)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
}

// Available reports whether /dev/vhost-net can be used by this process, and
// if not, why: a nil error means it opened. Opening is the whole test: it
// autoloads the vhost_net module through its misc-device alias and checks
// permission in one step.
func Available() error { return availableAt(DevicePath) }

func availableAt(path string) error {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%s does not exist (the vhost_net module is not loaded and could not be autoloaded; try `modprobe vhost_net`): %w", path, err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("no permission to open %s (run as root or join the group that owns it, usually kvm): %w", path, err)
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return fmt.Errorf("%s exists but no driver is bound to it (vhost_net missing from this kernel): %w", path, err)
	}
	return fmt.Errorf("open %s: %w", path, err)
}

// Vhost modes of the --net option.
const (
	VhostAuto = "auto" // use vhost-net when the host has it, else the userspace backend
	VhostOn   = "on"   // vhost-net or fail
	VhostOff  = "off"  // userspace backend
)

// Choose decides between the in-kernel vhost-net backend and the userspace
// one for a --net vhost=MODE option. reason is a sentence for the log that
// says which path was taken and why; err is set for an unknown mode and for
// "on" when vhost-net cannot be used.
func Choose(mode string) (useVhost bool, reason string, err error) {
	return choose(mode, Available)
}

func choose(mode string, available func() error) (bool, string, error) {
	switch mode {
	case VhostOff:
		return false, "userspace virtio-net backend: vhost=off", nil
	case VhostOn:
		if err := available(); err != nil {
			return false, "", fmt.Errorf("vhost=on but vhost-net is unusable: %w", err)
		}
		return true, "vhost-net backend: vhost=on and " + DevicePath + " is usable", nil
	case VhostAuto, "":
		if err := available(); err != nil {
			return false, fmt.Sprintf("userspace virtio-net backend: vhost=auto and vhost-net is unusable: %v", err), nil
		}
		return true, "vhost-net backend: vhost=auto and " + DevicePath + " is usable", nil
	}
	return false, "", fmt.Errorf("vhost=%q: want on, off or auto", mode)
}
