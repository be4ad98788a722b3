package balloon

import "sync/atomic"

// ErrorKind is a kind of refused or failed balloon request, counted in
// Stats.Errors under its name.
type ErrorKind int

const (
	// KindNotRAM: a page (or a 2 MiB page's range) that is not guest RAM.
	KindNotRAM ErrorKind = iota
	// KindMisaligned: a 2 MiB page whose address is not 2 MiB aligned.
	KindMisaligned
	// KindHeld: a page handed over that the balloon already holds.
	KindHeld
	// KindNotHeld: a page taken back that the balloon does not hold.
	KindNotHeld
	// KindBadBatch: a batch the host cannot read (more entries than a
	// batch page holds, or a batch page outside RAM).
	KindBadBatch
	// KindBadCommand: an unknown command, one whose capability was not
	// granted, or invalid arguments.
	KindBadCommand
	// KindBadMagic: a call on the port without the protocol's magic.
	KindBadMagic
	// KindReset: a command answered with a reset request (VMware's
	// ERROR_RESET): sent before the guest's START, or after the host asked
	// for a reset and before the guest restarted the protocol.
	KindReset
	// KindDiscard: the host could not release a page's memory (madvise
	// failed); the page stays in the balloon without saving memory.
	KindDiscard

	numErrorKinds
)

var errorKindNames = [numErrorKinds]string{
	KindNotRAM:     "page_not_ram",
	KindMisaligned: "page_misaligned",
	KindHeld:       "page_already_held",
	KindNotHeld:    "page_not_held",
	KindBadBatch:   "batch_invalid",
	KindBadCommand: "command_invalid",
	KindBadMagic:   "bad_magic",
	KindReset:      "reset_answered",
	KindDiscard:    "discard_failed",
}

func (k ErrorKind) String() string {
	if k < 0 || k >= numErrorKinds {
		return "unknown"
	}
	return errorKindNames[k]
}

// Metrics are a balloon's counters. Every field is an atomic, so a
// snapshot never waits for a vCPU that is serving a batch, and the vCPU
// threads never wait for a reader.
type Metrics struct {
	commands []string        // names, fixed at construction
	served   []atomic.Uint64 // per command; the last one counts unknown commands
	errors   [numErrorKinds]atomic.Uint64
	held4K   atomic.Uint64 // pages now held
	held2M   atomic.Uint64
	returned atomic.Uint64 // bytes released with a successful Discard, ever
}

// unknownCommand is the name unknown commands are counted under.
const unknownCommand = "unknown"

func newMetrics(commands []string) *Metrics {
	names := append(append([]string(nil), commands...), unknownCommand)
	return &Metrics{commands: names, served: make([]atomic.Uint64, len(names))}
}

// countCommand counts command i of the names given to NewLedger; any other
// i counts as unknown.
func (m *Metrics) countCommand(i int) {
	if i < 0 || i >= len(m.served)-1 {
		i = len(m.served) - 1
	}
	m.served[i].Add(1)
}

// countError counts one error of kind k and returns the new count, so
// that callers can log the first of a kind loudly and the rest quietly.
func (m *Metrics) countError(k ErrorKind) uint64 {
	if k < 0 || k >= numErrorKinds {
		return 0
	}
	return m.errors[k].Add(1)
}

// Stats is a snapshot of a balloon's accounting.
type Stats struct {
	// TargetBytes is how much memory the host wants the balloon to hold:
	// the balloon size, taken from the guest (not what the guest keeps).
	TargetBytes uint64 `json:"target_bytes"`
	// HeldBytes is what the balloon holds now: Held4K 4 KiB pages plus
	// Held2M 2 MiB pages.
	HeldBytes uint64 `json:"held_bytes"`
	Held4K    uint64 `json:"held_4k_pages"`
	Held2M    uint64 `json:"held_2m_pages"`
	// ReturnedBytes is the host memory given back since the balloon was
	// created: the sum of the successful discards. Pages the guest takes
	// back and touches are backed again, so this is a total, not what is
	// saved now (that is at most HeldBytes).
	ReturnedBytes uint64 `json:"returned_bytes"`
	// Commands counts the requests served, by command name.
	Commands map[string]uint64 `json:"commands"`
	// Errors counts refused or failed requests, by kind (ErrorKind names).
	Errors map[string]uint64 `json:"errors"`
}

func (m *Metrics) snapshot(target uint64) Stats {
	s := Stats{
		TargetBytes:   target,
		Held4K:        m.held4K.Load(),
		Held2M:        m.held2M.Load(),
		ReturnedBytes: m.returned.Load(),
		Commands:      make(map[string]uint64, len(m.commands)),
		Errors:        make(map[string]uint64, numErrorKinds),
	}
	s.HeldBytes = s.Held4K*uint64(Page4K) + s.Held2M*uint64(Page2M)
	for i, name := range m.commands {
		s.Commands[name] = m.served[i].Load()
	}
	for k := range numErrorKinds {
		s.Errors[k.String()] = m.errors[k].Load()
	}
	return s
}
