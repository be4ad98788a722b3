package legacy

import (
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/kvmm/kvmm/devices"
)

// UART register offsets (PC16550D data sheet, Table II). With LCR.DLAB set,
// offsets 0 and 1 are the divisor latch instead of RBR/THR and IER.
const (
	uartRBR = 0 // receiver buffer (read)
	uartTHR = 0 // transmitter holding (write)
	uartDLL = 0 // divisor latch low (DLAB)
	uartIER = 1
	uartDLM = 1 // divisor latch high (DLAB)
	uartIIR = 2 // interrupt identification (read)
	uartFCR = 2 // FIFO control (write)
	uartLCR = 3
	uartMCR = 4
	uartLSR = 5
	uartMSR = 6
	uartSCR = 7
)

// IER bits. The 16550A implements the low four; the rest read 0, which is
// how Linux tells it apart from UARTs with extra IER bits (XScale UUE).
const (
	ierRDI  = 1 << 0 // received data available
	ierTHRI = 1 << 1 // transmitter holding register empty
	ierRLSI = 1 << 2 // receiver line status
	ierMSI  = 1 << 3 // modem status
	ierMask = ierRDI | ierTHRI | ierRLSI | ierMSI
)

// IIR values: bit 0 clear means an interrupt is pending, bits 1-3 say which,
// bits 6-7 are set while the FIFOs are enabled.
const (
	iirNoInt = 0x01
	iirMSI   = 0x00
	iirTHRI  = 0x02
	iirRDI   = 0x04
	iirRLSI  = 0x06
	iirFIFOs = 0xC0
)

// FCR bits. Clear bits act and self-reset; the rest are kept only while
// FIFOs are enabled (the data sheet: other bits are not programmed unless
// bit 0 is set in the same write).
const (
	fcrEnable  = 1 << 0
	fcrClearRX = 1 << 1
	fcrClearTX = 1 << 2
	fcrKept    = fcrEnable | 1<<3 | 0xC0 // enable, DMA mode, RX trigger level
)

const lcrDLAB = 1 << 7

// MCR bits; bits 5-7 read 0 on a 16550A.
const (
	mcrDTR  = 1 << 0
	mcrRTS  = 1 << 1
	mcrOUT1 = 1 << 2
	mcrOUT2 = 1 << 3 // gates the UART's interrupt onto the ISA bus on a PC
	mcrLoop = 1 << 4
	mcrMask = 0x1F
)

// LSR bits.
const (
	lsrDR   = 1 << 0 // data ready
	lsrOE   = 1 << 1 // overrun error
	lsrTHRE = 1 << 5 // transmitter holding register empty
	lsrTEMT = 1 << 6 // transmitter empty (THR and shift register)
	// lsrIntAny are the error bits that raise the line status interrupt
	// and that a read of LSR clears: OE, PE, FE, BI. Only OE can happen
	// here: bytes never travel over a wire that could corrupt them.
	lsrIntAny = 0x1E
)

// MSR bits: deltas in the low nibble, line states in the high one.
const (
	msrDCTS  = 1 << 0
	msrDDSR  = 1 << 1
	msrTERI  = 1 << 2 // trailing edge of RI
	msrDDCD  = 1 << 3
	msrCTS   = 1 << 4
	msrDSR   = 1 << 5
	msrRI    = 1 << 6
	msrDCD   = 1 << 7
	msrDelta = 0x0F
)

// Reset and fixed values.
const (
	// serialIdleLines is what the modem inputs read outside loopback:
	// carrier, DSR and CTS asserted, as QEMU reports for a terminal that
	// is always there, so a guest tty without CLOCAL or with CRTSCTS is
	// never left waiting for a modem.
	serialIdleLines = msrDCD | msrDSR | msrCTS
	// serialDefaultDivisor is 9600 baud from the PC's 1.8432 MHz clock; the
	// value only matters to a guest that reads it back.
	serialDefaultDivisor = 12
	// SerialRXBuffer is how many received bytes the UART holds for the
	// guest. It is above the 16550A's 16-byte FIFO so a pasted line does not
	// need a retry per 16 bytes; the guest cannot tell, it reads while
	// LSR.DR is set.
	SerialRXBuffer = 64
)

// Serial is a 16550A-compatible UART (the 8250 family Linux's 8250 driver
// probes as PORT_16550A), with instant transmission: every THR byte is
// written to an io.Writer at once, so THR and the shift register are always
// empty again by the time the guest looks.
//
// vCPU threads access the registers while a host goroutine feeds input with
// Enqueue; one mutex guards the register state. Output is written under a
// second mutex taken before the first is released, so bytes leave in the
// order the guest wrote them while a slow writer blocks neither Enqueue nor
// a vCPU polling LSR.
type Serial struct {
	log   *slog.Logger
	limit logLimiter

	mu         sync.Mutex
	ier        byte
	lcr        byte
	mcr        byte
	fcr        byte
	scr        byte
	dll, dlm   byte
	lsrErr     byte // sticky LSR error bits (OE), cleared by reading LSR
	msrDelta   byte // MSR delta bits, cleared by reading MSR
	thrPending bool // THRE interrupt latched: cleared by a THR write or by reading it in IIR
	rx         [SerialRXBuffer]byte
	rxHead     int // index of the oldest byte in rx
	rxLen      int
	irq        irqWire

	outMu sync.Mutex // held while writing to out; see Serial
	out   io.Writer
	txBuf [1]byte // out's buffer, so a THR write does not allocate

	rxDrained chan struct{}
	stats     serialCounters
}

// SerialStats are a UART's counters since it was created.
type SerialStats struct {
	// TXBytes is how many bytes the guest transmitted to the writer.
	TXBytes uint64 `json:"tx_bytes"`
	// TXErrors is how many transmitted bytes the writer failed to take.
	TXErrors uint64 `json:"tx_errors"`
	// RXBytes is how many bytes Enqueue accepted.
	RXBytes uint64 `json:"rx_bytes"`
	// RXRefused is how many bytes Enqueue turned away because the buffer
	// was full or the UART was in loopback; a byte retried and refused
	// again counts again. None of them were lost: the caller kept them.
	RXRefused uint64 `json:"rx_refused"`
	// RXFlushed is how many received bytes the guest discarded unread by
	// clearing the RX FIFO (FCR), as Linux does when it opens the port.
	RXFlushed uint64 `json:"rx_flushed"`
	// Overruns is how many bytes were lost to an RX overrun (LSR.OE). Only
	// loopback transmission can overrun: Enqueue refuses instead.
	Overruns uint64 `json:"overruns"`
}

type serialCounters struct {
	txBytes, txErrors, rxBytes, rxRefused, rxFlushed, overruns atomic.Uint64
}

var _ devices.Device = (*Serial)(nil)

// NewSerial returns a UART in its reset state. out receives every byte the
// guest transmits, one Write per byte (nil discards them; wrap a slow sink
// in a buffer the caller flushes). irq is the UART's interrupt line, COM1's
// layout.COM1IRQ (nil: not wired). log gets unusual guest behaviour,
// rate-limited (nil: discarded).
func NewSerial(out io.Writer, irq devices.IRQLine, log *slog.Logger) *Serial {
	if out == nil {
		out = io.Discard
	}
	return &Serial{
		log:       orDiscard(log),
		dll:       serialDefaultDivisor,
		out:       out,
		irq:       irqWire{line: irq},
		rxDrained: make(chan struct{}, 1),
	}
}

// Read answers a guest IN. Each byte of a wider access reads the next
// register; bytes past the UART read 0xFF.
func (s *Serial) Read(offset uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range data {
		data[i] = 0xFF
		if inRange(offset, i, SerialPortSize) {
			data[i] = s.readReg(offset + uint64(i))
		}
	}
}

// Write answers a guest OUT, byte by byte as Read does.
func (s *Serial) Write(offset uint64, data []byte) {
	s.mu.Lock()
	tx, send := byte(0), false
	for i, b := range data {
		if inRange(offset, i, SerialPortSize) {
			if t, ok := s.writeReg(offset+uint64(i), b); ok {
				// One access reaches THR at most once: only its
				// first byte can be at offset 0.
				tx, send = t, true
			}
		}
	}
	if !send {
		s.mu.Unlock()
		return
	}
	s.outMu.Lock()
	s.mu.Unlock()
	s.txBuf[0] = tx
	n, err := s.out.Write(s.txBuf[:])
	s.outMu.Unlock()
	if err == nil && n != 1 {
		err = io.ErrShortWrite
	}
	if err != nil {
		s.stats.txErrors.Add(1)
		s.limit.log(s.log, slog.LevelWarn, "serial output write failed; byte dropped", "err", err)
		return
	}
	s.stats.txBytes.Add(1)
}

// Enqueue queues bytes the guest will receive and returns how many it took.
// It takes what fits in the receive buffer and refuses the rest rather than
// drop it: the caller keeps b[n:] and retries once the guest has read some
// (see RXDrained and RXSpace). In loopback mode the UART's input is
// disconnected from the outside, as on the chip, and nothing is taken.
func (s *Serial) Enqueue(b []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(b), s.rxSpace())
	for _, c := range b[:n] {
		s.rxPush(c)
	}
	s.stats.rxBytes.Add(uint64(n))
	if n < len(b) {
		s.stats.rxRefused.Add(uint64(len(b) - n))
	}
	if n > 0 {
		s.updateIRQ()
	}
	return n
}

// RXSpace returns how many bytes Enqueue would take now.
func (s *Serial) RXSpace() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rxSpace()
}

// RXDrained returns a channel that receives a value (coalesced, never
// blocking the guest) whenever RXSpace may have grown: the guest read a
// byte, cleared the RX FIFO or left loopback mode. A feeder whose Enqueue
// came up short can wait on it instead of polling.
func (s *Serial) RXDrained() <-chan struct{} { return s.rxDrained }

// Stats returns the UART's counters.
func (s *Serial) Stats() SerialStats {
	c := &s.stats
	return SerialStats{
		TXBytes: c.txBytes.Load(), TXErrors: c.txErrors.Load(),
		RXBytes: c.rxBytes.Load(), RXRefused: c.rxRefused.Load(),
		RXFlushed: c.rxFlushed.Load(), Overruns: c.overruns.Load(),
	}
}

func (s *Serial) rxSpace() int {
	if s.mcr&mcrLoop != 0 {
		return 0
	}
	return len(s.rx) - s.rxLen
}

// rxPush appends a byte; the caller checked there is room.
func (s *Serial) rxPush(b byte) {
	s.rx[(s.rxHead+s.rxLen)%len(s.rx)] = b
	s.rxLen++
}

func (s *Serial) rxPop() byte {
	b := s.rx[s.rxHead]
	s.rxHead = (s.rxHead + 1) % len(s.rx)
	s.rxLen--
	s.notifyDrained()
	return b
}

func (s *Serial) rxFlush() {
	if s.rxLen > 0 {
		s.stats.rxFlushed.Add(uint64(s.rxLen))
		s.rxHead, s.rxLen = 0, 0
		s.notifyDrained()
	}
}

func (s *Serial) notifyDrained() {
	select {
	case s.rxDrained <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// readReg returns one register as the guest reads it, with the read's side
// effects (RBR pops, IIR acknowledges THRE, LSR and MSR clear their sticky
// bits). Called with s.mu held.
func (s *Serial) readReg(off uint64) byte {
	dlab := s.lcr&lcrDLAB != 0
	switch off {
	case uartRBR:
		if dlab {
			return s.dll
		}
		if s.rxLen == 0 {
			return 0
		}
		b := s.rxPop()
		s.updateIRQ()
		return b
	case uartIER:
		if dlab {
			return s.dlm
		}
		return s.ier
	case uartIIR:
		id := s.interruptID()
		if id == iirTHRI {
			// Reading IIR while it reports THRE is the acknowledge.
			s.thrPending = false
			s.updateIRQ()
		}
		if s.fcr&fcrEnable != 0 {
			id |= iirFIFOs
		}
		return id
	case uartLCR:
		return s.lcr
	case uartMCR:
		return s.mcr
	case uartLSR:
		v := s.lsrErr | lsrTHRE | lsrTEMT
		if s.rxLen > 0 {
			v |= lsrDR
		}
		if s.lsrErr != 0 {
			s.lsrErr = 0
			s.updateIRQ()
		}
		return v
	case uartMSR:
		v := s.modemLines() | s.msrDelta
		if s.msrDelta != 0 {
			s.msrDelta = 0
			s.updateIRQ()
		}
		return v
	case uartSCR:
		return s.scr
	}
	return 0xFF
}

// writeReg applies one register write. It returns the byte to transmit when
// the write was to THR outside loopback; the caller writes it after
// releasing s.mu. Called with s.mu held.
func (s *Serial) writeReg(off uint64, b byte) (tx byte, send bool) {
	dlab := s.lcr&lcrDLAB != 0
	switch off {
	case uartTHR:
		if dlab {
			s.dll = b
			return 0, false
		}
		// THR is full for an instant: the THRE interrupt clears, so the
		// line drops if nothing else is pending...
		s.thrPending = false
		s.updateIRQ()
		if s.mcr&mcrLoop != 0 {
			s.loopbackReceive(b)
		} else {
			tx, send = b, true
		}
		// ...and the byte is transmitted at once: THRE interrupts again.
		// The low-high pulse gives the edge-triggered ISA pin a new edge
		// per byte, which interrupt-driven 8250 transmit relies on.
		s.thrPending = true
		s.updateIRQ()
		return tx, send
	case uartIER:
		if dlab {
			s.dlm = b
			return 0, false
		}
		old := s.ier
		s.ier = b & ierMask
		if (old^s.ier)&ierTHRI != 0 {
			// Enabling THRI with THR empty (always, here) raises the
			// THRE interrupt even if it was acknowledged before; Linux
			// starts transmission this way and probes for it
			// (UART_BUG_THRE). Disabling it forgets the latch.
			s.thrPending = s.ier&ierTHRI != 0
		}
		s.updateIRQ()
	case uartFCR:
		s.writeFCR(b)
	case uartLCR:
		s.lcr = b
	case uartMCR:
		s.writeMCR(b)
	case uartLSR, uartMSR:
		// Read-only: LSR's write is a factory test mode on the chip and
		// MSR follows the (virtual) modem.
		s.limit.log(s.log, slog.LevelDebug, "guest wrote a read-only UART register; ignored", "offset", off, "value", b)
	case uartSCR:
		s.scr = b
	}
	return 0, false
}

// loopbackReceive feeds a transmitted byte back to the receiver. Unlike
// Enqueue nobody can hold the byte for a retry, so a full buffer overruns
// as the chip does: the byte is lost and LSR.OE tells the guest.
func (s *Serial) loopbackReceive(b byte) {
	if s.rxLen == len(s.rx) {
		s.lsrErr |= lsrOE
		s.stats.overruns.Add(1)
		return
	}
	s.rxPush(b)
}

func (s *Serial) writeFCR(b byte) {
	if (s.fcr^b)&fcrEnable != 0 {
		// Switching between FIFO and 16450 mode clears both FIFOs.
		s.rxFlush()
	}
	if b&fcrEnable == 0 {
		s.fcr = 0
	} else {
		if b&fcrClearRX != 0 {
			s.rxFlush()
		}
		// fcrClearTX has nothing to clear: transmission is instant.
		s.fcr = b & fcrKept
	}
	s.updateIRQ()
}

func (s *Serial) writeMCR(b byte) {
	oldLines, oldMCR := s.modemLines(), s.mcr
	s.mcr = b & mcrMask
	newLines := s.modemLines()
	changed := oldLines ^ newLines
	if changed&msrCTS != 0 {
		s.msrDelta |= msrDCTS
	}
	if changed&msrDSR != 0 {
		s.msrDelta |= msrDDSR
	}
	if changed&msrDCD != 0 {
		s.msrDelta |= msrDDCD
	}
	if oldLines&msrRI != 0 && newLines&msrRI == 0 {
		s.msrDelta |= msrTERI
	}
	if oldMCR&mcrLoop != 0 && s.mcr&mcrLoop == 0 {
		s.notifyDrained() // Enqueue takes bytes again
	}
	s.updateIRQ()
}

// modemLines is the MSR's line-state nibble. In loopback the modem control
// outputs are wired to the inputs: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD
// (what Linux's autoconfig checks: MCR=LOOP|OUT2|RTS must read MSR 0x9x).
func (s *Serial) modemLines() byte {
	if s.mcr&mcrLoop == 0 {
		return serialIdleLines
	}
	var v byte
	if s.mcr&mcrDTR != 0 {
		v |= msrDSR
	}
	if s.mcr&mcrRTS != 0 {
		v |= msrCTS
	}
	if s.mcr&mcrOUT1 != 0 {
		v |= msrRI
	}
	if s.mcr&mcrOUT2 != 0 {
		v |= msrDCD
	}
	return v
}

// interruptID is the highest-priority pending, enabled interrupt, as IIR
// reports it: line status > received data > THR empty > modem status.
//
// Received data interrupts as soon as one byte is there, whatever the FIFO
// trigger level: the character-timeout interrupt that would report a short
// FIFO needs a timer, and the 8250 driver handles both the same way (it
// reads while LSR.DR is set).
func (s *Serial) interruptID() byte {
	switch {
	case s.ier&ierRLSI != 0 && s.lsrErr&lsrIntAny != 0:
		return iirRLSI
	case s.ier&ierRDI != 0 && s.rxLen > 0:
		return iirRDI
	case s.ier&ierTHRI != 0 && s.thrPending:
		return iirTHRI
	case s.ier&ierMSI != 0 && s.msrDelta != 0:
		return iirMSI
	}
	return iirNoInt
}

// updateIRQ drives the interrupt line from the pending state. On a PC the
// UART's interrupt reaches the ISA bus only through a buffer enabled by
// MCR.OUT2, and in loopback the chip holds its outputs (OUT2 included)
// inactive, so both gate the line. Called with s.mu held.
func (s *Serial) updateIRQ() {
	high := s.interruptID() != iirNoInt && s.mcr&(mcrOUT2|mcrLoop) == mcrOUT2
	if err := s.irq.set(high); err != nil {
		s.limit.log(s.log, slog.LevelWarn, "serial interrupt", "err", err)
	}
}
