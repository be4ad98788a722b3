package virtio

import (
	"bytes"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWorkersStopAndLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 50 {
		var fds []*EventFD
		var calls atomic.Int32
		var srcs []Source
		for range 3 {
			e, err := NewEventFD()
			if err != nil {
				t.Fatal(err)
			}
			fds = append(fds, e)
			srcs = append(srcs, Source{Event: e, Handle: func() { calls.Add(1) }})
		}
		w := StartWorkers(nil, srcs...)
		for _, e := range fds {
			if err := e.Signal(); err != nil {
				t.Fatal(err)
			}
		}
		for end := time.Now().Add(2 * time.Second); calls.Load() < 6 && time.Now().Before(end); {
			time.Sleep(100 * time.Microsecond)
		}
		if calls.Load() < 6 {
			t.Fatalf("%d handler calls, want 3 initial + 3 signalled", calls.Load())
		}
		w.Stop()
		w.Stop() // idempotent
		n := calls.Load()
		fds[0].Signal()
		time.Sleep(time.Millisecond)
		if calls.Load() != n {
			t.Fatal("handler ran after Stop")
		}
		// The eventfds are usable again after Stop.
		if err := fds[1].Signal(); err != nil {
			t.Fatal(err)
		}
		fds[1].Drain()
		for _, e := range fds {
			e.Close()
		}
	}
	var nilWorkers *Workers
	nilWorkers.Stop()
	for end := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("goroutines %d before, %d after", before, after)
	}
}

func TestRateLimitedLog(t *testing.T) {
	var buf bytes.Buffer
	r := NewRateLimitedLog(slog.New(slog.NewTextHandler(&buf, nil)), 50*time.Millisecond)
	for range 100 {
		r.Warn("guest misbehaves", "n", 1)
	}
	if c := strings.Count(buf.String(), "guest misbehaves"); c != 1 {
		t.Fatalf("%d lines logged in a burst", c)
	}
	if r.Suppressed() != 99 {
		t.Errorf("%d suppressed", r.Suppressed())
	}
	time.Sleep(60 * time.Millisecond)
	r.Error("again")
	if !strings.Contains(buf.String(), "suppressed=99") {
		t.Errorf("the next message does not carry the count:\n%s", buf.String())
	}
}

// TestWorkerSlot: Start replaces the workers a slot held (stopping them),
// Stop empties it, and an empty slot stops without harm.
func TestWorkerSlot(t *testing.T) {
	var slot WorkerSlot
	slot.Stop() // empty
	e, err := NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var first, second atomic.Int32
	slot.Start(nil, Source{Event: e, Handle: func() { first.Add(1) }})
	slot.Start(nil, Source{Event: e, Handle: func() { second.Add(1) }})
	n := first.Load()
	if err := e.Signal(); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(2 * time.Second); second.Load() < 2 && time.Now().Before(end); {
		time.Sleep(100 * time.Microsecond)
	}
	if second.Load() < 2 || first.Load() != n {
		t.Fatalf("after the second Start: first ran %d more times, second %d times (want 0 and >= 2)", first.Load()-n, second.Load())
	}
	slot.Stop()
	m := second.Load()
	e.Signal()
	time.Sleep(time.Millisecond)
	if second.Load() != m {
		t.Fatal("handler ran after Stop")
	}
}
