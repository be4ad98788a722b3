package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// EventFD is a Linux eventfd that a goroutine can wait on through the Go
// runtime's poller (no OS thread blocked per waiter) and that can be
// interrupted without closing it, so one descriptor serves a queue across
// any number of device resets. KVM signals it on a guest notification
// (ioeventfd), or the transport does on the MMIO fallback path; vhost can
// be handed its descriptor instead.
type EventFD struct {
	fd int
	f  *os.File // the same descriptor, for poller-backed reads
}

// NewEventFD creates a non-blocking, close-on-exec eventfd.
func NewEventFD() (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	// os.NewFile on a non-blocking descriptor registers it with the
	// runtime poller; f.Fd() would switch it back to blocking mode, so the
	// raw number is kept on the side and Fd is never called.
	return &EventFD{fd: fd, f: os.NewFile(uintptr(fd), "eventfd")}, nil
}

// FD is the descriptor number, for KVM_IOEVENTFD or vhost's kick fd.
func (e *EventFD) FD() int { return e.fd }

// Signal adds one to the counter, waking a waiter.
func (e *EventFD) Signal() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	if _, err := unix.Write(e.fd, b[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
		// EAGAIN: the counter is saturated, so a wake-up is pending anyway.
		return fmt.Errorf("signal eventfd %d: %w", e.fd, err)
	}
	return nil
}

// Wait blocks until the counter is nonzero and consumes it. It returns
// errInterrupted after Interrupt.
func (e *EventFD) Wait() error {
	var b [8]byte
	_, err := e.f.Read(b[:])
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errInterrupted
	}
	if err != nil {
		return fmt.Errorf("wait on eventfd %d: %w", e.fd, err)
	}
	return nil
}

var errInterrupted = errors.New("eventfd wait interrupted")

// Interrupt makes current and future Waits return errInterrupted until
// Rearm.
func (e *EventFD) Interrupt() { _ = e.f.SetReadDeadline(time.Unix(1, 0)) }

// Rearm undoes Interrupt.
func (e *EventFD) Rearm() { _ = e.f.SetReadDeadline(time.Time{}) }

// Drain consumes a pending count without blocking: signals left over from
// before a reset must not look like new notifications.
func (e *EventFD) Drain() {
	var b [8]byte
	_, _ = unix.Read(e.fd, b[:])
}

// Close releases the descriptor.
func (e *EventFD) Close() error { return e.f.Close() }
