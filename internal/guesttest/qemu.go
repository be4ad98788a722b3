package guesttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// QEMUBinary is the emulator RunQEMU starts.
	QEMUBinary = "qemu-system-x86_64"
	// DefaultQEMUTimeout bounds a run whose context has no deadline.
	DefaultQEMUTimeout = 2 * time.Minute
	// QEMUMemory is the guest RAM size RunQEMU gives.
	QEMUMemory = "128M"

	// internalErrorMarker is what QEMU prints on KVM_EXIT_INTERNAL_ERROR
	// (after which it stops the VM and waits forever).
	internalErrorMarker = "KVM internal error"
	// internalErrorGrace lets QEMU finish its register dump before the kill.
	internalErrorGrace = 300 * time.Millisecond
	// killWait bounds how long Wait waits for QEMU's pipes after the kill.
	killWait = 5 * time.Second
)

// Ending says how a QEMU run ended.
type Ending int

const (
	// Exited: QEMU exited by itself; QEMUResult.ExitStatus is its status.
	Exited Ending = iota
	// InternalError: KVM stopped the VM with an internal error (e.g. an
	// emulation failure) and RunQEMU killed QEMU.
	InternalError
	// TimedOut: the context ended first and RunQEMU killed QEMU.
	TimedOut
)

func (e Ending) String() string {
	switch e {
	case Exited:
		return "exited"
	case InternalError:
		return "KVM internal error"
	case TimedOut:
		return "timed out"
	}
	return "Ending(" + strconv.Itoa(int(e)) + ")"
}

// QEMUResult is the outcome of RunQEMU.
type QEMUResult struct {
	// Serial is everything the guest wrote to COM1.
	Serial string
	// ExitStatus is QEMU's exit status when Ending is Exited, else -1.
	ExitStatus int
	// Duration is the wall time from start to exit (or kill).
	Duration time.Duration
	// Ending says whether QEMU exited or was killed, and why.
	Ending Ending
	// Log is QEMU's own stderr (warnings, KVM error dumps).
	Log string
	// Args is the command line that was run, QEMUBinary first.
	Args []string
}

// QEMUAvailable reports whether qemu-system-x86_64 is installed and /dev/kvm
// can be opened read-write.
func QEMUAvailable() error {
	if _, err := exec.LookPath(QEMUBinary); err != nil {
		return fmt.Errorf("guesttest: %s not found (Debian package qemu-system-x86): %w", QEMUBinary, err)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("guesttest: /dev/kvm not usable: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("guesttest: closing /dev/kvm: %w", err)
	}
	return nil
}

// QEMUArgs returns the command line RunQEMU uses (without the binary):
// KVM acceleration only (no TCG fallback), the given machine type, 128 MiB,
// smp vCPUs, no default devices, COM1 on stdout, isa-debug-exit at 0xF4 and
// the ELF as a PVH -kernel, followed by extra.
func QEMUArgs(elf, machine string, smp int, extra ...string) []string {
	args := []string{
		"-accel", "kvm",
		"-M", machine,
		"-m", QEMUMemory,
		"-smp", strconv.Itoa(smp),
		"-nodefaults", "-no-user-config",
		"-no-reboot",
		"-display", "none",
		"-serial", "stdio",
		"-device", fmt.Sprintf("isa-debug-exit,iobase=%#x,iosize=4", DebugExitPort),
		"-kernel", elf,
	}
	return append(args, extra...)
}

// RunQEMU boots elf under qemu-system-x86_64 -accel kvm with the given
// machine type ("microvm", "pc", "q35") and vCPU count, plus extra
// arguments (e.g. "-append", "cmdline"). It returns when QEMU exits, when
// KVM reports an internal error (QEMU would otherwise wait forever), or when
// ctx ends (DefaultQEMUTimeout when ctx has no deadline). The error is nil
// only when QEMU exited by itself; otherwise it describes the ending and
// includes the serial output so far, which the result also holds.
func RunQEMU(ctx context.Context, elf string, machine string, smp int, extra ...string) (QEMUResult, error) {
	if smp < 1 {
		smp = 1
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultQEMUTimeout)
		defer cancel()
	}
	runCtx, kill := context.WithCancel(ctx)
	defer kill()

	args := QEMUArgs(elf, machine, smp, extra...)
	res := QEMUResult{ExitStatus: -1, Args: append([]string{QEMUBinary}, args...)}
	serial := &syncBuffer{}
	log := &syncBuffer{marker: []byte(internalErrorMarker), hit: make(chan struct{})}

	cmd := exec.CommandContext(runCtx, QEMUBinary, args...)
	cmd.Stdin = nil // /dev/null: the stdio chardev only writes
	cmd.Stdout = serial
	cmd.Stderr = log
	cmd.WaitDelay = killWait

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("guesttest: starting %s: %w", QEMUBinary, err)
	}
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-log.hit:
			t := time.NewTimer(internalErrorGrace)
			defer t.Stop()
			select {
			case <-t.C:
				kill()
			case <-runCtx.Done():
			}
		case <-runCtx.Done():
		}
	}()
	waitErr := cmd.Wait()
	res.Duration = time.Since(start)
	kill()
	<-watchDone
	res.Serial = serial.String()
	res.Log = log.String()

	switch {
	case log.sawMarker():
		res.Ending = InternalError
	case ctx.Err() != nil:
		res.Ending = TimedOut
	default:
		res.Ending = Exited
		var exitErr *exec.ExitError
		switch {
		case waitErr == nil:
			res.ExitStatus = 0
		case errors.As(waitErr, &exitErr) && exitErr.Exited():
			res.ExitStatus = exitErr.ExitCode()
		default:
			return res, fmt.Errorf("guesttest: %s %s: %w\nserial:\n%s\nqemu log:\n%s",
				QEMUBinary, machine, waitErr, res.Serial, res.Log)
		}
		return res, nil
	}
	return res, fmt.Errorf("guesttest: %s (%s, %d vCPUs) %s after %v\nserial so far:\n%s\nqemu log:\n%s",
		QEMUBinary, machine, smp, res.Ending, res.Duration.Round(time.Millisecond), res.Serial, res.Log)
}

// syncBuffer is a goroutine-safe output sink that optionally signals, once,
// when marker first appears in what was written.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker []byte
	hit    chan struct{}
	seen   bool
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.marker != nil && !b.seen && bytes.Contains(b.buf.Bytes(), b.marker) {
		b.seen = true
		close(b.hit)
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) sawMarker() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen
}

// Lines returns the serial output split into lines, without "\r".
func (r QEMUResult) Lines() []string {
	s := strings.ReplaceAll(r.Serial, "\r", "")
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// HasLine reports whether the serial output contains exactly this line.
func (r QEMUResult) HasLine(line string) bool {
	for _, l := range r.Lines() {
		if l == line {
			return true
		}
	}
	return false
}
