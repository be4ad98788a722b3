package virtio

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// RateLimitedLog logs at most one message per interval and counts what it
// dropped. A guest controls how often device errors happen; it must not
// control how much the host logs.
type RateLimitedLog struct {
	log      *slog.Logger
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed uint64
}

// DefaultLogInterval is the interval of NewRateLimitedLog.
const DefaultLogInterval = time.Second

// NewRateLimitedLog wraps log (slog.Default() when nil).
func NewRateLimitedLog(log *slog.Logger, interval time.Duration) *RateLimitedLog {
	if log == nil {
		log = slog.Default()
	}
	if interval <= 0 {
		interval = DefaultLogInterval
	}
	return &RateLimitedLog{log: log, interval: interval}
}

// Warn logs at warning level unless a message went out less than an
// interval ago; the next message that does go out carries the count of
// those suppressed.
func (r *RateLimitedLog) Warn(msg string, args ...any) { r.emit(slog.LevelWarn, msg, args) }

// Error is Warn at error level.
func (r *RateLimitedLog) Error(msg string, args ...any) { r.emit(slog.LevelError, msg, args) }

func (r *RateLimitedLog) emit(level slog.Level, msg string, args []any) {
	r.mu.Lock()
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < r.interval {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	r.last = now
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	r.log.Log(context.Background(), level, msg, args...)
}

// Suppressed is the number of messages dropped since the last one logged.
func (r *RateLimitedLog) Suppressed() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.suppressed
}
