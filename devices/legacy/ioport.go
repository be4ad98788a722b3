package legacy

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kvmm/kvmm/devices"
)

// inRange reports whether byte i of an access at offset falls inside a
// register window of size bytes, without the overflow offset+i could hit
// for an offset near 2^64.
func inRange(offset uint64, i int, size uint64) bool {
	return offset < size && uint64(i) < size-offset
}

// orDiscard returns log, or a logger that drops everything when log is nil.
func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

// Log volume a guest can cause through one device: logBurst records per
// logWindow, the rest counted and reported with the next record that gets
// through. A guest hammering a register must not flood the host's logs or
// slow its own vCPU down with formatting.
const (
	logBurst  = 10
	logWindow = time.Minute
)

// logLimiter rate-limits one device's logging of guest behaviour.
type logLimiter struct {
	mu         sync.Mutex
	windowEnd  time.Time
	inWindow   int
	suppressed int
}

// log emits msg at level unless the device used up its budget. Disabled
// levels cost one Enabled call and nothing else.
func (l *logLimiter) log(lg *slog.Logger, level slog.Level, msg string, args ...any) {
	ctx := context.Background()
	if !lg.Enabled(ctx, level) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	if now.After(l.windowEnd) {
		l.windowEnd, l.inWindow = now.Add(logWindow), 0
	}
	if l.inWindow >= logBurst {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.inWindow++
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed_before", suppressed)
	}
	lg.Log(ctx, level, msg, args...)
}

// irqWire drives a devices.IRQLine from a device's interrupt condition.
// It forwards only changes, so a guest polling a register does not cost an
// ioctl per access, and it must be used under the device's lock so that
// level changes reach the interrupt controller in the order they happened.
type irqWire struct {
	line devices.IRQLine // nil: not wired, changes are dropped
	high bool
}

// set drives the line to high if that is a change.
func (w *irqWire) set(high bool) error {
	if high == w.high {
		return nil
	}
	w.high = high
	if w.line == nil {
		return nil
	}
	if err := w.line.SetLevel(high); err != nil {
		return fmt.Errorf("set IRQ line %s: %w", levelName(high), err)
	}
	return nil
}

func levelName(high bool) string {
	if high {
		return "high"
	}
	return "low"
}
