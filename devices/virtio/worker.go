package virtio

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Source is one thing a device worker waits for: an eventfd (a queue's
// kick, or a device's own event such as host console input) and what to
// do each time it fires.
type Source struct {
	Event  *EventFD
	Handle func()
}

// QueueSource is the usual source: queue q's notifications, with handle
// run on every kick (and once at start, for buffers made available
// before the worker ran).
func QueueSource(q *Queue, handle func(q *Queue)) Source {
	return Source{Event: q.Kick(), Handle: func() { handle(q) }}
}

// Workers are the goroutines of an active device, one per source. Stop
// ends them and returns only when every handler has returned, which is
// what makes a device reset safe: after Stop no goroutine touches the
// device's queues.
type Workers struct {
	log     *slog.Logger
	sources []Source
	stop    atomic.Bool
	wg      sync.WaitGroup
}

// StartWorkers runs each source's handler once, then again every time its
// eventfd is signalled, until Stop.
func StartWorkers(log *slog.Logger, sources ...Source) *Workers {
	if log == nil {
		log = slog.Default()
	}
	w := &Workers{log: log, sources: sources}
	for _, s := range sources {
		s.Event.Rearm()
		w.wg.Add(1)
		go w.run(s)
	}
	return w
}

func (w *Workers) run(s Source) {
	defer w.wg.Done()
	for !w.stop.Load() {
		s.Handle()
		err := s.Event.Wait()
		if errors.Is(err, errInterrupted) {
			continue // Stop, or a spurious deadline: the loop condition decides
		}
		if err != nil {
			w.log.Error("virtio worker: eventfd wait failed; the queue stops", "err", err)
			return
		}
	}
}

// Stop ends the workers and waits for them. It is idempotent and safe on a
// nil *Workers.
func (w *Workers) Stop() {
	if w == nil {
		return
	}
	w.stop.Store(true)
	for _, s := range w.sources {
		s.Event.Interrupt()
	}
	w.wg.Wait()
	for _, s := range w.sources {
		s.Event.Rearm()
	}
}

// WorkerSlot holds the workers a device runs between Activate and Reset.
// It has a lock of its own so that Reset can stop the workers without
// holding the device's lock: the workers usually take that lock, and Stop
// waits for them. The zero value is empty and ready to use.
type WorkerSlot struct {
	mu sync.Mutex
	w  *Workers
}

// Start runs the sources' workers, stopping any the slot held before.
func (s *WorkerSlot) Start(log *slog.Logger, sources ...Source) {
	s.mu.Lock()
	old := s.w
	s.w = StartWorkers(log, sources...)
	s.mu.Unlock()
	old.Stop()
}

// Stop ends the slot's workers, if any, and waits for them.
func (s *WorkerSlot) Stop() {
	s.mu.Lock()
	w := s.w
	s.w = nil
	s.mu.Unlock()
	w.Stop()
}
