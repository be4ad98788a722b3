package vmm

import (
	"bytes"
	"context"
	"strings"
	"sync"
)

// SerialBuffer collects a VM's serial output for a program or a test suite
// that reads it: pass it as Options.Serial. vCPU threads write to it while
// other goroutines read, so every method locks.
type SerialBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

// Write appends p; it never fails.
func (s *SerialBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return len(p), nil
}

// String returns everything written so far.
func (s *SerialBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitFor blocks until the output contains substr, or ctx ends.
func (s *SerialBuffer) WaitFor(ctx context.Context, substr string) error {
	for {
		s.mu.Lock()
		if strings.Contains(s.b.String(), substr) {
			s.mu.Unlock()
			return nil
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
