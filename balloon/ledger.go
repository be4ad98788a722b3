package balloon

import (
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"
)

// Memory is the guest RAM a balloon works on; *memory.Guest implements it.
type Memory interface {
	// Contains reports whether [gpa, gpa+n) is RAM, inside one region.
	Contains(gpa, n uint64) bool
	Read(gpa uint64, b []byte) error
	Write(gpa uint64, b []byte) error
	// Discard gives the host memory behind [gpa, gpa+n) back to the host;
	// the range reads as zero afterwards.
	Discard(gpa, n uint64) error
	// Size is the guest's RAM in bytes.
	Size() uint64
}

// PageSize is the size of a page the guest hands over.
type PageSize uint64

const (
	// Page4K is the x86 base page: the unit of every balloon target and of
	// vmw_balloon's "frames".
	Page4K PageSize = 4 << 10
	// Page2M is a 2 MiB page (vmw_balloon's BATCHED_2M commands): 512
	// frames, 2 MiB aligned.
	Page2M PageSize = 2 << 20

	framesPer2M = uint64(Page2M / Page4K)
)

func (p PageSize) String() string {
	switch p {
	case Page4K:
		return "4K"
	case Page2M:
		return "2M"
	}
	return fmt.Sprintf("%d-byte", uint64(p))
}

// Errors of Inflate and Deflate (wrapped, with the page). Each protocol
// maps them to its own status codes.
var (
	ErrNotRAM     = errors.New("page is not guest RAM")
	ErrMisaligned = errors.New("page is not aligned to its size")
	ErrHeld       = errors.New("page is already in the balloon")
	ErrNotHeld    = errors.New("page is not in the balloon")
	ErrPageSize   = errors.New("unsupported page size")
	// ErrTarget is wrapped by SetTarget's refusals.
	ErrTarget = errors.New("invalid balloon target")
)

// Ledger is the accounting and reclaim every balloon shares: the target,
// the pages the guest has handed over, and the counters. It is safe for
// concurrent use: vCPU threads inflate and deflate while the API sets the
// target and reads the stats.
type Ledger struct {
	mem     Memory
	log     *slog.Logger
	metrics *Metrics
	target  atomic.Uint64 // bytes, a multiple of Page4K

	// mu serialises changes to the held set together with their discards:
	// were a discard done outside it, a concurrent deflate of the same page
	// (a guest racing itself on two vCPUs) could let the guest use the page
	// before the discard wiped it.
	mu    sync.Mutex
	small map[uint64]*frameSet // 2 MiB block number -> its 4 KiB pages held
	huge  map[uint64]struct{}  // 2 MiB block numbers held as 2 MiB pages
}

// frameSet is a bitmap of the 512 frames of one 2 MiB block: 72 bytes per
// block with any 4 KiB page held, where a map entry per frame would cost
// several times that for a large balloon.
type frameSet struct {
	bits [framesPer2M / 64]uint64
	n    int
}

func (s *frameSet) has(i uint64) bool { return s.bits[i/64]&(1<<(i%64)) != 0 }
func (s *frameSet) set(i uint64)      { s.bits[i/64] |= 1 << (i % 64); s.n++ }
func (s *frameSet) clear(i uint64)    { s.bits[i/64] &^= 1 << (i % 64); s.n-- }

// NewLedger returns an empty balloon with target 0 over mem. commands
// names the protocol's commands, counted by CountCommand in that order.
func NewLedger(mem Memory, commands []string, log *slog.Logger) *Ledger {
	if log == nil {
		log = slog.Default()
	}
	return &Ledger{mem: mem, log: log, metrics: newMetrics(commands),
		small: map[uint64]*frameSet{}, huge: map[uint64]struct{}{}}
}

// SetTarget sets how much memory, in bytes, the host wants the balloon to
// hold: the balloon's size, taken from the guest, not what the guest keeps
// (a 1 GiB guest with a 256 MiB target keeps 768 MiB). It must be a
// multiple of 4 KiB and at most the guest's RAM. The guest's driver learns
// it when it next asks (vmw_balloon polls about once a second).
func (l *Ledger) SetTarget(bytes uint64) error {
	if bytes%uint64(Page4K) != 0 {
		return fmt.Errorf("%w: %d bytes is not a whole number of 4 KiB pages", ErrTarget, bytes)
	}
	if ram := l.mem.Size(); bytes > ram {
		return fmt.Errorf("%w: %s is more than the guest's %s of RAM", ErrTarget, formatBytes(bytes), formatBytes(ram))
	}
	l.target.Store(bytes)
	return nil
}

// Target is the target in bytes.
func (l *Ledger) Target() uint64 { return l.target.Load() }

// CountCommand counts one request of command i (an index into the names
// given to NewLedger; anything else counts as unknown).
func (l *Ledger) CountCommand(i int) { l.metrics.countCommand(i) }

// CountError counts a protocol-level error (a bad batch, command or
// magic); page errors are counted by Inflate and Deflate themselves.
func (l *Ledger) CountError(k ErrorKind) uint64 { return l.metrics.countError(k) }

// Stats is a snapshot of the accounting.
func (l *Ledger) Stats() Stats { return l.metrics.snapshot(l.Target()) }

// Inflate records that the guest handed over the page at gpa and gives its
// memory back to the host. It refuses (ErrNotRAM, ErrMisaligned, ErrHeld)
// a page that is not RAM, not aligned to its size, or overlaps a page the
// balloon holds. A failed discard is counted and logged but the page is
// still held: the guest has given it up either way.
func (l *Ledger) Inflate(gpa uint64, size PageSize) error {
	if err := l.check("inflate", gpa, size); err != nil {
		return err
	}
	block, frame := gpa/uint64(Page2M), gpa%uint64(Page2M)/uint64(Page4K)
	l.mu.Lock()
	defer l.mu.Unlock()
	_, whole := l.huge[block]
	part := l.small[block]
	switch {
	case whole, size == Page2M && part != nil, size == Page4K && part != nil && part.has(frame):
		l.countPage(KindHeld)
		return fmt.Errorf("inflate %s page %#x: %w", size, gpa, ErrHeld)
	case size == Page2M:
		l.huge[block] = struct{}{}
		l.metrics.held2M.Add(1)
	default:
		if part == nil {
			part = &frameSet{}
			l.small[block] = part
		}
		part.set(frame)
		l.metrics.held4K.Add(1)
	}
	if err := l.mem.Discard(gpa, uint64(size)); err != nil {
		if l.metrics.countError(KindDiscard) == 1 {
			l.log.Warn("balloon: cannot give the memory of a ballooned page back to the host; such pages stay in the balloon without saving memory",
				"gpa", fmt.Sprintf("%#x", gpa), "size", size.String(), "err", err)
		}
		return nil
	}
	l.metrics.returned.Add(uint64(size))
	return nil
}

// Deflate records that the guest took back the page at gpa; it is usable
// at once (the host backs it again, zeroed, when the guest touches it). It
// refuses (ErrNotRAM, ErrMisaligned, ErrNotHeld) a page the balloon does
// not hold with that size: a 4 KiB page inside a held 2 MiB page is not
// held by itself, since the guest locked it as part of the larger one.
func (l *Ledger) Deflate(gpa uint64, size PageSize) error {
	if err := l.check("deflate", gpa, size); err != nil {
		return err
	}
	block, frame := gpa/uint64(Page2M), gpa%uint64(Page2M)/uint64(Page4K)
	l.mu.Lock()
	defer l.mu.Unlock()
	if size == Page2M {
		if _, ok := l.huge[block]; ok {
			delete(l.huge, block)
			l.metrics.held2M.Add(^uint64(0))
			return nil
		}
	} else if part := l.small[block]; part != nil && part.has(frame) {
		part.clear(frame)
		if part.n == 0 {
			delete(l.small, block)
		}
		l.metrics.held4K.Add(^uint64(0))
		return nil
	}
	l.countPage(KindNotHeld)
	return fmt.Errorf("deflate %s page %#x: %w", size, gpa, ErrNotHeld)
}

// Reset forgets every page: the guest has released them without taking
// them back one by one (vmw_balloon pops its pages when the host asks for
// a reset). Their memory stays released until the guest touches it.
func (l *Ledger) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.small)
	clear(l.huge)
	l.metrics.held4K.Store(0)
	l.metrics.held2M.Store(0)
}

// Holds reports whether the balloon holds the page at gpa with that size.
func (l *Ledger) Holds(gpa uint64, size PageSize) bool {
	block, frame := gpa/uint64(Page2M), gpa%uint64(Page2M)/uint64(Page4K)
	l.mu.Lock()
	defer l.mu.Unlock()
	if size == Page2M {
		_, ok := l.huge[block]
		return ok && gpa%uint64(Page2M) == 0
	}
	part := l.small[block]
	return part != nil && part.has(frame) && gpa%uint64(Page4K) == 0
}

// forEach calls fn for every held page, in no particular order, with the
// ledger locked (fn must not call the ledger).
func (l *Ledger) forEach(fn func(gpa uint64, size PageSize)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for block := range l.huge {
		fn(block*uint64(Page2M), Page2M)
	}
	for block, part := range l.small {
		for w, word := range part.bits {
			for word != 0 {
				i := uint64(bits.TrailingZeros64(word))
				word &^= 1 << i
				fn(block*uint64(Page2M)+(uint64(w)*64+i)*uint64(Page4K), Page4K)
			}
		}
	}
}

// check validates a page request; errors are counted.
func (l *Ledger) check(op string, gpa uint64, size PageSize) error {
	switch {
	case size != Page4K && size != Page2M:
		l.countPage(KindBadCommand)
		return fmt.Errorf("%s page %#x: %w %d", op, gpa, ErrPageSize, uint64(size))
	case gpa%uint64(size) != 0:
		l.countPage(KindMisaligned)
		return fmt.Errorf("%s %s page %#x: %w", op, size, gpa, ErrMisaligned)
	case gpa > ^uint64(0)-uint64(size) || !l.mem.Contains(gpa, uint64(size)):
		l.countPage(KindNotRAM)
		return fmt.Errorf("%s %s page %#x: %w", op, size, gpa, ErrNotRAM)
	}
	return nil
}

// countPage counts a refused page. The first refusal of each kind is
// logged (a driver bug, or a guest probing the host, is worth a line); the
// rest are only counted, so a guest cannot flood the log.
func (l *Ledger) countPage(k ErrorKind) {
	if l.metrics.countError(k) == 1 {
		l.log.Info("balloon: page refused (only the first of each kind is logged; Stats counts them all)", "kind", k.String())
	}
}

// formatBytes writes a byte count with the largest binary unit that
// divides it, e.g. "256 MiB", for error messages.
func formatBytes(n uint64) string {
	for _, u := range []struct {
		size uint64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n != 0 && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
