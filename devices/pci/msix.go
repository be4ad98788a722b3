package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/kvmm/kvmm/devices"
)

// MSI-X (PCI 3.0 §6.8.2): a 12-byte capability, a table of 16-byte entries
// (message address, data, vector control) and a pending-bit array, both in
// memory BARs.
const (
	msixCapLen       = 12
	msixCtlTableSize = 0x07FF
	msixCtlFuncMask  = 1 << 14
	msixCtlEnable    = 1 << 15
	msixEntrySize    = 16
	msixVecCtlMask   = 1 << 0
	// MaxMSIXVectors is the largest table the capability can describe.
	MaxMSIXVectors = 2048
	// msiAddrMask/msiAddrBase: an x86 MSI address is 0xFEEx_xxxx; any
	// other value would be a DMA write to memory, which kvmm does not model.
	msiAddrMask = 0xFFF00000
	msiAddrBase = 0xFEE00000
)

// Errors of MSIX.Notify.
var (
	// ErrMSIXDisabled: the guest has not enabled MSI-X; the device should
	// use INTx instead.
	ErrMSIXDisabled = errors.New("MSI-X is disabled")
	// ErrNoVector: the vector is not in the table (virtio's NO_VECTOR).
	ErrNoVector = errors.New("no such MSI-X vector")
)

// MSIRouter connects MSI vectors to the interrupt controller: KVM GSI
// routes and irqfds in a VM (KVMRouter), a fake in tests.
type MSIRouter interface {
	NewVector() (MSIVector, error)
}

// MSIVector is one vector's path into the guest: an eventfd that, while
// attached, raises the MSI message last set. MSIX calls it with its own
// lock held, one call at a time per vector.
type MSIVector interface {
	// SetMessage routes the vector to an MSI address and data.
	SetMessage(addr uint64, data uint32) error
	// Attach connects (true) or disconnects the eventfd from the route.
	// Signals that arrive while disconnected stay in the eventfd.
	Attach(on bool) error
	// Trigger signals the vector once.
	Trigger() error
	// TakePending consumes and reports signals that arrived while the
	// vector was disconnected.
	TakePending() (bool, error)
	// Pending reports such signals without consuming them.
	Pending() bool
	// EventFD is the eventfd (for vhost's call fd), or -1.
	EventFD() int
	// Close releases the route, eventfd and GSI.
	Close() error
}

// MSIX is a function's MSI-X table, pending bits and vector routes. A
// device model calls Notify to raise vector N; everything else is the
// guest's business through the capability and the table/PBA regions.
type MSIX struct {
	log     *slog.Logger
	mu      sync.Mutex
	table   []byte // n entries of 16 bytes
	pending []bool // software pending bits (Notify while masked)
	enabled bool
	fmask   bool
	vectors []MSIVector
	active  []bool // the vector's eventfd is attached to a valid route
	routed  []msiMessage
	bad     []bool // an invalid message was logged for this vector
	closed  bool
}

type msiMessage struct {
	addr  uint64
	data  uint32
	valid bool
}

// NewMSIX creates a table of n vectors (1..2048), all masked, each with
// its route and eventfd from router.
func NewMSIX(n int, router MSIRouter, log *slog.Logger) (*MSIX, error) {
	if n < 1 || n > MaxMSIXVectors {
		return nil, fmt.Errorf("MSI-X table of %d vectors: must be 1..%d: %w", n, MaxMSIXVectors, ErrInvalid)
	}
	if log == nil {
		log = slog.Default()
	}
	m := &MSIX{log: log, table: make([]byte, n*msixEntrySize), pending: make([]bool, n),
		active: make([]bool, n), routed: make([]msiMessage, n), bad: make([]bool, n)}
	for v := range n {
		// Reset state: every vector masked (PCI 3.0 §6.8.2.9).
		m.table[v*msixEntrySize+12] = msixVecCtlMask
		vec, err := router.NewVector()
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("MSI-X vector %d: %w", v, err)
		}
		m.vectors = append(m.vectors, vec)
	}
	return m, nil
}

// Size is the number of vectors.
func (m *MSIX) Size() int { return len(m.pending) }

// TableSize and PBASize are the byte sizes of the table and PBA regions.
func (m *MSIX) TableSize() uint64 { return uint64(len(m.pending)) * msixEntrySize }

// PBASize is a whole number of QWORDs, as the PBA is accessed.
func (m *MSIX) PBASize() uint64 { return uint64((len(m.pending)+63)/64) * 8 }

// Notify raises vector: it writes the vector's eventfd, or, while the
// vector or the function is masked, sets its pending bit; unmasking
// delivers it. It returns ErrMSIXDisabled while MSI-X is off (use INTx)
// and ErrNoVector for a vector outside the table.
func (m *MSIX) Notify(vector uint16) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := int(vector)
	if v >= len(m.pending) {
		return fmt.Errorf("notify vector %d of %d: %w", v, len(m.pending), ErrNoVector)
	}
	if !m.enabled {
		return ErrMSIXDisabled
	}
	if m.active[v] {
		if err := m.vectors[v].Trigger(); err != nil {
			return fmt.Errorf("MSI-X vector %d: %w", v, err)
		}
		return nil
	}
	m.pending[v] = true
	return nil
}

// VectorEventFD is the eventfd that raises vector, for a backend that
// signals the guest itself (vhost's call fd). Signals on it while the
// vector is masked become pending bits.
func (m *MSIX) VectorEventFD(vector uint16) (fd int, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if int(vector) >= len(m.vectors) || m.closed {
		return -1, false
	}
	fd = m.vectors[vector].EventFD()
	return fd, fd >= 0
}

// Enabled reports the capability's MSI-X Enable bit.
func (m *MSIX) Enabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enabled
}

// Masked reports whether vector cannot fire now (vector mask, function
// mask or MSI-X disabled).
func (m *MSIX) Masked(vector uint16) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int(vector) >= len(m.pending) || m.masked(int(vector))
}

// PendingBit reports the vector's bit in the PBA.
func (m *MSIX) PendingBit(vector uint16) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int(vector) < len(m.pending) && m.pendingBit(int(vector))
}

// Close detaches every vector and releases its route, eventfd and GSI.
func (m *MSIX) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	var errs []error
	for i, vec := range m.vectors {
		errs = append(errs, vec.Close())
		m.active[i] = false
	}
	m.vectors = nil
	return errors.Join(errs...)
}

func (m *MSIX) masked(v int) bool {
	return !m.enabled || m.fmask || m.table[v*msixEntrySize+12]&msixVecCtlMask != 0
}

func (m *MSIX) pendingBit(v int) bool {
	if m.pending[v] {
		return true
	}
	// A signal written to the eventfd by someone else (vhost) while the
	// vector was detached is pending too.
	return !m.active[v] && m.vectors != nil && m.vectors[v].Pending()
}

func (m *MSIX) message(v int) msiMessage {
	e := m.table[v*msixEntrySize:]
	addr := uint64(binary.LittleEndian.Uint32(e[0:])) | uint64(binary.LittleEndian.Uint32(e[4:]))<<32
	return msiMessage{addr: addr, data: binary.LittleEndian.Uint32(e[8:]),
		valid: uint32(addr)&msiAddrMask == msiAddrBase}
}

// setControl applies the capability's Message Control bits.
func (m *MSIX) setControl(enable, fmask bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if enable == m.enabled && fmask == m.fmask {
		return
	}
	if m.enabled && !enable {
		// Pending bits mean nothing once MSI-X is off; a re-enable must not
		// deliver interrupts from a previous driver instance.
		clear(m.pending)
	}
	m.enabled, m.fmask = enable, fmask
	for v := range m.pending {
		m.sync(v)
	}
}

// sync makes vector v's route and eventfd attachment match the table and
// the control bits, and delivers a pending interrupt on unmask. Called
// with m.mu held.
func (m *MSIX) sync(v int) {
	if m.closed {
		return
	}
	vec := m.vectors[v]
	msg := m.message(v)
	if m.masked(v) || !msg.valid {
		if !m.masked(v) && !m.bad[v] {
			m.bad[v] = true
			m.log.Warn("MSI-X vector unmasked with an address that is not the local APIC's; not delivering it",
				"vector", v, "addr", fmt.Sprintf("%#x", msg.addr), "data", fmt.Sprintf("%#x", msg.data))
		}
		if m.active[v] {
			if err := vec.Attach(false); err != nil {
				m.log.Warn("MSI-X: detaching vector", "vector", v, "err", err)
			}
			m.active[v] = false
		}
		return
	}
	m.bad[v] = false
	if m.routed[v] != msg {
		if err := vec.SetMessage(msg.addr, msg.data); err != nil {
			m.log.Warn("MSI-X: routing vector", "vector", v, "err", err)
			return
		}
		m.routed[v] = msg
	}
	if m.active[v] {
		return
	}
	// Drain what arrived while detached so it is delivered exactly once,
	// by the write below, after the eventfd is attached again.
	was, err := vec.TakePending()
	if err != nil {
		m.log.Warn("MSI-X: reading vector eventfd", "vector", v, "err", err)
	}
	if err := vec.Attach(true); err != nil {
		m.log.Warn("MSI-X: attaching vector", "vector", v, "err", err)
		return
	}
	m.active[v] = true
	if was || m.pending[v] {
		m.pending[v] = false
		if err := vec.Trigger(); err != nil {
			m.log.Warn("MSI-X: delivering pending vector", "vector", v, "err", err)
		}
	}
}

// Table is the handler of the MSI-X table region.
func (m *MSIX) Table() devices.Device { return msixTable{m} }

// PBA is the handler of the pending-bit-array region.
func (m *MSIX) PBA() devices.Device { return msixPBA{m} }

type msixTable struct{ m *MSIX }

// Read answers DWORD and QWORD reads (and, leniently, smaller aligned ones)
// of the table.
func (t msixTable) Read(off uint64, data []byte) {
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if !tableAccessOK(off, len(data), uint64(len(m.table))) {
		fill(data, 0xFF)
		return
	}
	copy(data, m.table[off:])
}

// msixEntryWritable is the per-byte write mask of one entry: the address's
// two low bits are zero (DWORD aligned), vector control has only the mask.
var msixEntryWritable = [msixEntrySize]byte{0xFC, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
	0xFF, 0xFF, 0xFF, 0xFF, msixVecCtlMask, 0, 0, 0}

func (t msixTable) Write(off uint64, data []byte) {
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if !tableAccessOK(off, len(data), uint64(len(m.table))) {
		return
	}
	for i, b := range data {
		o := int(off) + i
		w := msixEntryWritable[o%msixEntrySize]
		m.table[o] = m.table[o]&^w | b&w
	}
	first, last := int(off)/msixEntrySize, (int(off)+len(data)-1)/msixEntrySize
	for v := first; v <= last; v++ {
		m.sync(v)
	}
}

func tableAccessOK(off uint64, n int, size uint64) bool {
	return (n == 1 || n == 2 || n == 4 || n == 8) && off%uint64(n) == 0 && off < size && uint64(n) <= size-off
}

type msixPBA struct{ m *MSIX }

func (p msixPBA) Read(off uint64, data []byte) {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	size := uint64(len(m.pending)+63) / 64 * 8
	if !tableAccessOK(off, len(data), size) {
		fill(data, 0xFF)
		return
	}
	for i := range data {
		var b byte
		for bit := range 8 {
			v := (int(off)+i)*8 + bit
			if v < len(m.pending) && m.pendingBit(v) {
				b |= 1 << bit
			}
		}
		data[i] = b
	}
}

// Write is ignored: the PBA is read-only.
func (p msixPBA) Write(uint64, []byte) {}

// MSIXLayout places the table and the PBA in memory BARs. Offsets are
// QWORD aligned (their low 3 bits hold the BAR indicator).
type MSIXLayout struct {
	TableBAR    int
	TableOffset uint64
	PBABAR      int
	PBAOffset   uint64
}

// AddMSIX adds the MSI-X capability for m, and the table and PBA regions to
// the BARs of l (which must already be defined). It returns the
// capability's offset.
func (c *Config) AddMSIX(m *MSIX, l MSIXLayout) (int, error) {
	if c.attached.Load() {
		return 0, fmt.Errorf("MSI-X: function already attached: %w", ErrInvalid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.msix != nil {
		return 0, fmt.Errorf("MSI-X: the function has one already: %w", ErrInvalid)
	}
	place := func(what string, bar int, off, size uint64, dev devices.Device) (*barState, error) {
		if bar < 0 || bar >= c.numBARs() || c.bars[bar] == nil || c.bars[bar].Kind == BARIO {
			return nil, fmt.Errorf("MSI-X %s: BAR %d is not a memory BAR: %w", what, bar, ErrInvalid)
		}
		if off%8 != 0 || off > 0xFFFFFFF8 {
			return nil, fmt.Errorf("MSI-X %s offset %#x is not QWORD aligned: %w", what, off, ErrInvalid)
		}
		bs := c.bars[bar]
		saved := bs.Regions
		bs.Regions = append(bs.Regions[:len(bs.Regions):len(bs.Regions)], Region{Name: "msix-" + what, Offset: off, Size: size, Dev: dev})
		if err := checkRegions(bs); err != nil {
			bs.Regions = saved
			_ = checkRegions(bs)
			return nil, fmt.Errorf("MSI-X %s: %w", what, err)
		}
		return bs, nil
	}
	tb, err := place("table", l.TableBAR, l.TableOffset, m.TableSize(), m.Table())
	if err != nil {
		return 0, err
	}
	if _, err := place("pba", l.PBABAR, l.PBAOffset, m.PBASize(), m.PBA()); err != nil {
		tb.Regions = tb.Regions[:len(tb.Regions)-1]
		_ = checkRegions(tb)
		return 0, err
	}
	data := make([]byte, msixCapLen)
	binary.LittleEndian.PutUint16(data[2:], uint16(m.Size()-1))
	binary.LittleEndian.PutUint32(data[4:], uint32(l.TableOffset)|uint32(l.TableBAR))
	binary.LittleEndian.PutUint32(data[8:], uint32(l.PBAOffset)|uint32(l.PBABAR))
	wmask := make([]byte, msixCapLen)
	wmask[3] = (msixCtlEnable | msixCtlFuncMask) >> 8
	off, err := c.addCapability(Capability{ID: CapIDMSIX, Data: data, Writable: wmask,
		Write: func(cp []byte, _, _ int) {
			ctl := binary.LittleEndian.Uint16(cp[2:])
			m.setControl(ctl&msixCtlEnable != 0, ctl&msixCtlFuncMask != 0)
		}})
	if err != nil {
		return 0, err
	}
	c.msix, c.msixCap = m, off
	return off, nil
}
