package legacy

import (
	"sync"
	"testing"
	"time"
)

// fakeIRQ records every level driven on the line.
type fakeIRQ struct {
	mu      sync.Mutex
	high    bool
	history []bool // levels driven since the last take
	err     error
}

func (f *fakeIRQ) SetLevel(high bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.high = high
	f.history = append(f.history, high)
	return f.err
}

// level is the line's current level (low before anything was driven).
func (f *fakeIRQ) level() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.high
}

// take returns the levels driven since the last take.
func (f *fakeIRQ) take() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.history
	f.history = nil
	return h
}

// waitLevel polls until the line is at want or the timeout passes.
func (f *fakeIRQ) waitLevel(t *testing.T, want bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for f.level() != want {
		if time.Now().After(deadline) {
			t.Fatalf("IRQ line did not go %v within %v", want, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// fakePower records power events.
type fakePower struct {
	mu        sync.Mutex
	resets    []string
	exits     []int
	poweroffs int
}

func (p *fakePower) PowerOff() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.poweroffs++
}

func (p *fakePower) Reset(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resets = append(p.resets, reason)
}

func (p *fakePower) DebugExit(status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.exits = append(p.exits, status)
}

func (p *fakePower) snapshot() (resets []string, exits []int, poweroffs int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.resets...), append([]int(nil), p.exits...), p.poweroffs
}

// fakeClock is a settable clock safe to read from timer goroutines.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// port is what the tests drive: any devices.Device.
type port interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

func inb(d port, off uint64) byte {
	var b [1]byte
	d.Read(off, b[:])
	return b[0]
}

func outb(d port, off uint64, v byte) { d.Write(off, []byte{v}) }
