package vmm

import (
	"sync"
	"time"
)

// Event is one entry of the VM's event stream: a state change or something
// the guest reported.
type Event struct {
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`             // "state" or a guest event such as "guest-reset"
	State  State     `json:"state,omitempty"`  // the new state, for "state"
	Detail string    `json:"detail,omitempty"` // human-readable context
	Status *int      `json:"status,omitempty"` // the exit status, when the VM stopped
}

// eventBus fans events out to subscribers. A subscriber that does not keep
// up loses events rather than stalling the VM; it sees a gap, never a hang.
type eventBus struct {
	mu     sync.Mutex
	subs   map[chan Event]struct{}
	closed bool
}

const subscriberBuffer = 64

func (b *eventBus) subscribe() (<-chan Event, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan Event, subscriberBuffer)
	if b.closed {
		close(ch)
		return ch, func() {}
	}
	if b.subs == nil {
		b.subs = map[chan Event]struct{}{}
	}
	b.subs[ch] = struct{}{}
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
		}
	}
}

func (b *eventBus) publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// close ends every subscription after the last event.
func (b *eventBus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for ch := range b.subs {
		close(ch)
	}
	b.subs = nil
}
