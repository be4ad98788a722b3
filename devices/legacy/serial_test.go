package legacy

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kvmm/kvmm/devices"
)

// syncBuffer is a bytes.Buffer safe for the UART's writer goroutine and the
// test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestSerial(t *testing.T) (*Serial, *fakeIRQ, *syncBuffer) {
	t.Helper()
	irq, out := &fakeIRQ{}, &syncBuffer{}
	return NewSerial(out, irq, nil), irq, out
}

func TestSerialResetState(t *testing.T) {
	s, _, _ := newTestSerial(t)
	for _, tc := range []struct {
		name string
		off  uint64
		want byte
	}{
		{"IER", uartIER, 0},
		{"IIR no interrupt, FIFOs off", uartIIR, iirNoInt},
		{"LCR", uartLCR, 0},
		{"MCR", uartMCR, 0},
		{"LSR THRE|TEMT", uartLSR, lsrTHRE | lsrTEMT},
		{"MSR DCD|DSR|CTS", uartMSR, msrDCD | msrDSR | msrCTS},
		{"SCR", uartSCR, 0},
		{"RBR empty", uartRBR, 0},
	} {
		if got := inb(s, tc.off); got != tc.want {
			t.Errorf("%s = %#02x, want %#02x", tc.name, got, tc.want)
		}
	}
}

// linuxAutoconfig replays drivers/tty/serial/8250/8250_port.c autoconfig()
// and autoconfig_16550a() far enough to classify the UART, and returns the
// port type Linux would pick.
func linuxAutoconfig(s port) string {
	// IER read-back test.
	scratch := inb(s, uartIER)
	outb(s, uartIER, 0)
	scratch2 := inb(s, uartIER) & 0x0F
	outb(s, uartIER, 0x0F)
	scratch3 := inb(s, uartIER) & 0x0F
	outb(s, uartIER, scratch)
	if scratch2 != 0 || scratch3 != 0x0F {
		return "IER test failed"
	}
	saveMCR, saveLCR := inb(s, uartMCR), inb(s, uartLCR)
	// Loopback test: RTS and OUT2 must come back as CTS and DCD.
	outb(s, uartMCR, mcrLoop|mcrOUT2|mcrRTS)
	status1 := inb(s, uartMSR) & 0xF0
	outb(s, uartMCR, saveMCR)
	if status1 != 0x90 {
		return "loopback test failed"
	}
	// Clear EFR (config mode B), then look at the FIFO bits in IIR.
	outb(s, uartLCR, 0xBF)
	outb(s, uartFCR, 0)
	outb(s, uartLCR, 0)
	outb(s, uartFCR, fcrEnable)
	switch inb(s, uartIIR) >> 6 {
	case 0:
		outb(s, uartSCR, 0xA5)
		a := inb(s, uartSCR)
		outb(s, uartSCR, 0x5A)
		b := inb(s, uartSCR)
		if a == 0xA5 && b == 0x5A {
			return "16450"
		}
		return "8250"
	case 1:
		return "unknown"
	case 2:
		return "16550"
	}
	// autoconfig_16550a: EFR in config mode A or B means a 16650 or later.
	outb(s, uartLCR, 0x80)
	if inb(s, uartIIR) == 0 {
		return "ST16C650V1"
	}
	outb(s, uartLCR, 0xBF)
	if inb(s, uartIIR) == 0 {
		return "16650"
	}
	// TI16750: IIR bit 5 with 64-byte FIFO mode under DLAB.
	outb(s, uartLCR, 0)
	outb(s, uartFCR, fcrEnable|0x20)
	st1 := inb(s, uartIIR) & 0xE0
	outb(s, uartFCR, 0)
	outb(s, uartLCR, 0x80)
	outb(s, uartFCR, fcrEnable|0x20)
	st2 := inb(s, uartIIR) & 0xE0
	outb(s, uartFCR, 0)
	outb(s, uartLCR, 0)
	if st1 == 0xC0 && st2 == 0xE0 {
		return "16750"
	}
	// XScale: IER bit 6 (UUE) sticks.
	ier := inb(s, uartIER)
	outb(s, uartIER, ier&^0x40)
	if inb(s, uartIER)&0x40 == 0 {
		outb(s, uartIER, ier|0x40)
		if inb(s, uartIER)&0x40 != 0 {
			return "XScale"
		}
	}
	outb(s, uartIER, ier)
	outb(s, uartLCR, saveLCR)
	return "16550A"
}

func TestSerialLinuxAutoconfig(t *testing.T) {
	s, irq, out := newTestSerial(t)
	if got := linuxAutoconfig(s); got != "16550A" {
		t.Fatalf("Linux autoconfig detects %q, want 16550A", got)
	}
	if h := irq.take(); len(h) != 0 {
		t.Errorf("probe drove the IRQ line %v; OUT2 was never set outside loopback", h)
	}
	if out.String() != "" {
		t.Errorf("probe transmitted %q", out.String())
	}
}

func TestSerialScratch(t *testing.T) {
	s, _, _ := newTestSerial(t)
	for _, v := range []byte{0x00, 0x55, 0xA5, 0x5A, 0xFF} {
		outb(s, uartSCR, v)
		if got := inb(s, uartSCR); got != v {
			t.Errorf("SCR wrote %#02x, read %#02x", v, got)
		}
	}
}

func TestSerialDLAB(t *testing.T) {
	s, _, out := newTestSerial(t)
	outb(s, uartIER, ierRDI)
	outb(s, uartLCR, lcrDLAB|0x03)
	if got := inb(s, uartDLL); got != serialDefaultDivisor {
		t.Errorf("default DLL = %d, want %d", got, serialDefaultDivisor)
	}
	outb(s, uartDLL, 0x01) // 115200 baud
	outb(s, uartDLM, 0x02)
	if dll, dlm := inb(s, uartDLL), inb(s, uartDLM); dll != 0x01 || dlm != 0x02 {
		t.Errorf("divisor reads %#02x/%#02x, want 0x01/0x02", dll, dlm)
	}
	outb(s, uartLCR, 0x03)
	if got := inb(s, uartIER); got != ierRDI {
		t.Errorf("IER after DLAB = %#02x, want %#02x (DLM write must not reach IER)", got, ierRDI)
	}
	if got := inb(s, uartLCR); got != 0x03 {
		t.Errorf("LCR = %#02x, want 0x03", got)
	}
	if out.String() != "" {
		t.Errorf("DLL write transmitted %q", out.String())
	}
	outb(s, uartLCR, lcrDLAB)
	outb(s, uartLCR, 0)
	if dll := inb(s, uartRBR); dll != 0 {
		t.Errorf("RBR with DLAB clear = %#02x, want 0 (empty), not DLL", dll)
	}
}

func TestSerialTransmit(t *testing.T) {
	s, _, out := newTestSerial(t)
	for _, b := range []byte("hello\n") {
		if inb(s, uartLSR)&lsrTHRE == 0 {
			t.Fatal("THR not empty before a write")
		}
		outb(s, uartTHR, b)
	}
	if got := out.String(); got != "hello\n" {
		t.Errorf("output %q, want %q", got, "hello\n")
	}
	if st := s.Stats(); st.TXBytes != 6 {
		t.Errorf("TXBytes = %d, want 6", st.TXBytes)
	}
}

// TestSerialTHREInterrupt checks the THRE interrupt as Linux's 8250 driver
// uses it: raised by enabling ETBEI with THR empty, acknowledged by reading
// IIR, and raised again (a new edge) after every byte written to THR.
func TestSerialTHREInterrupt(t *testing.T) {
	s, irq, out := newTestSerial(t)
	outb(s, uartMCR, mcrOUT2|mcrRTS|mcrDTR)
	irq.take()

	steps := []struct {
		name    string
		do      func()
		iir     byte // IIR read after the step (acknowledges THRE); 0 = skip
		history []bool
	}{
		{"enable ETBEI", func() { outb(s, uartIER, ierTHRI) }, 0, []bool{true}},
		{"IIR acknowledges", func() {}, iirTHRI, []bool{false}},
		{"IIR now empty", func() {}, iirNoInt, nil},
		{"THR write re-triggers", func() { outb(s, uartTHR, 'a') }, 0, []bool{true}},
		{"THR write while pending pulses", func() { outb(s, uartTHR, 'b') }, 0, []bool{false, true}},
		{"disable ETBEI", func() { outb(s, uartIER, 0) }, iirNoInt, []bool{false}},
		{"re-enable ETBEI re-triggers", func() { outb(s, uartIER, ierTHRI) }, iirTHRI, []bool{true, false}},
		{"rewriting the same IER does not", func() { outb(s, uartIER, ierTHRI) }, iirNoInt, nil},
	}
	for _, st := range steps {
		st.do()
		if st.iir != 0 {
			if got := inb(s, uartIIR); got != st.iir {
				t.Errorf("%s: IIR = %#02x, want %#02x", st.name, got, st.iir)
			}
		}
		if h := irq.take(); !slices.Equal(h, st.history) {
			t.Errorf("%s: IRQ levels %v, want %v", st.name, h, st.history)
		}
	}
	if got := out.String(); got != "ab" {
		t.Errorf("output %q, want %q", got, "ab")
	}
}

// TestSerialLinuxTHRETests replays the two THRE probes of Linux's
// serial8250_do_startup; a real 16550A passes both.
func TestSerialLinuxTHRETests(t *testing.T) {
	s, _, _ := newTestSerial(t)
	// UART_BUG_TXEN: THRI enabled with TEMT set must show an interrupt.
	outb(s, uartIER, ierTHRI)
	lsr, iir := inb(s, uartLSR), inb(s, uartIIR)
	outb(s, uartIER, 0)
	if lsr&lsrTEMT != 0 && iir&iirNoInt != 0 {
		t.Error("UART_BUG_TXEN: no THRE interrupt after enabling ETBEI")
	}
	// UART_BUG_THRE: THRE must reassert after an acknowledge when ETBEI
	// is enabled again.
	outb(s, uartIER, ierTHRI)
	iir1 := inb(s, uartIIR)
	outb(s, uartIER, 0)
	outb(s, uartIER, ierTHRI)
	iir = inb(s, uartIIR)
	outb(s, uartIER, 0)
	if iir1&iirNoInt == 0 && iir&iirNoInt != 0 {
		t.Error("UART_BUG_THRE: THRE not reasserted")
	}
}

func TestSerialReceive(t *testing.T) {
	s, irq, _ := newTestSerial(t)
	outb(s, uartFCR, fcrEnable)
	outb(s, uartMCR, mcrOUT2)
	outb(s, uartIER, ierRDI)
	if h := irq.take(); len(h) != 0 {
		t.Fatalf("IRQ driven %v with nothing received", h)
	}
	if n := s.Enqueue([]byte("hi")); n != 2 {
		t.Fatalf("Enqueue took %d, want 2", n)
	}
	if h := irq.take(); !slices.Equal(h, []bool{true}) {
		t.Errorf("IRQ levels after Enqueue %v, want [true]", h)
	}
	if got := inb(s, uartIIR); got != iirFIFOs|iirRDI {
		t.Errorf("IIR = %#02x, want %#02x", got, iirFIFOs|iirRDI)
	}
	for i, want := range []byte("hi") {
		if inb(s, uartLSR)&lsrDR == 0 {
			t.Fatalf("byte %d: LSR.DR clear", i)
		}
		if got := inb(s, uartRBR); got != want {
			t.Errorf("byte %d = %q, want %q", i, got, want)
		}
	}
	if inb(s, uartLSR)&lsrDR != 0 {
		t.Error("LSR.DR set after draining")
	}
	if h := irq.take(); !slices.Equal(h, []bool{false}) {
		t.Errorf("IRQ levels after draining %v, want [false]", h)
	}
	if got := inb(s, uartIIR); got != iirFIFOs|iirNoInt {
		t.Errorf("IIR = %#02x, want %#02x", got, iirFIFOs|iirNoInt)
	}
}

func TestSerialReceiveBufferFull(t *testing.T) {
	s, _, _ := newTestSerial(t)
	in := bytes.Repeat([]byte("0123456789"), 10)
	n := s.Enqueue(in)
	if n != SerialRXBuffer {
		t.Fatalf("Enqueue took %d of %d, want %d", n, len(in), SerialRXBuffer)
	}
	if sp := s.RXSpace(); sp != 0 {
		t.Errorf("RXSpace = %d, want 0", sp)
	}
	if got := s.Enqueue(in[n:]); got != 0 {
		t.Errorf("Enqueue into a full buffer took %d", got)
	}
	st := s.Stats()
	if st.RXBytes != SerialRXBuffer || st.RXRefused != uint64(2*len(in)-2*n) {
		t.Errorf("stats %+v, want RXBytes %d RXRefused %d", st, SerialRXBuffer, 2*len(in)-2*n)
	}
	if inb(s, uartLSR)&lsrOE != 0 {
		t.Error("LSR.OE set although nothing was lost (Enqueue refused instead)")
	}
	select {
	case <-s.RXDrained():
		t.Fatal("RXDrained signalled before the guest read")
	default:
	}
	// The guest reads one byte: room for one more, in order.
	if got := inb(s, uartRBR); got != in[0] {
		t.Errorf("first byte %q, want %q", got, in[0])
	}
	select {
	case <-s.RXDrained():
	case <-time.After(time.Second):
		t.Fatal("RXDrained not signalled after the guest read")
	}
	if sp := s.RXSpace(); sp != 1 {
		t.Errorf("RXSpace = %d, want 1", sp)
	}
	if got := s.Enqueue(in[n:]); got != 1 {
		t.Errorf("Enqueue took %d, want 1", got)
	}
	var got []byte
	for inb(s, uartLSR)&lsrDR != 0 {
		got = append(got, inb(s, uartRBR))
	}
	if want := in[1 : n+1]; !bytes.Equal(got, want) {
		t.Errorf("received %q, want %q", got, want)
	}
}

func TestSerialLoopback(t *testing.T) {
	s, irq, out := newTestSerial(t)
	outb(s, uartFCR, fcrEnable)
	outb(s, uartIER, ierRDI|ierTHRI|ierRLSI|ierMSI)
	outb(s, uartMCR, mcrLoop|mcrOUT2)
	irq.take()
	outb(s, uartTHR, 'x')
	if out.String() != "" {
		t.Errorf("loopback byte reached the output: %q", out.String())
	}
	if got := inb(s, uartIIR); got != iirFIFOs|iirRDI {
		t.Errorf("IIR = %#02x, want RDI", got)
	}
	if got := inb(s, uartRBR); got != 'x' {
		t.Errorf("looped back %q, want 'x'", got)
	}
	if h := irq.take(); len(h) != 0 {
		t.Errorf("IRQ driven %v in loopback; OUT2 is held inactive", h)
	}
	if n := s.Enqueue([]byte("ext")); n != 0 || s.RXSpace() != 0 {
		t.Errorf("loopback: Enqueue took %d, RXSpace %d; input is disconnected", n, s.RXSpace())
	}

	// Overrun: more than the buffer holds, nothing read.
	for i := range SerialRXBuffer + 2 {
		outb(s, uartTHR, byte(i))
	}
	if got := inb(s, uartIIR); got != iirFIFOs|iirRLSI {
		t.Errorf("IIR after overrun = %#02x, want RLS", got)
	}
	if lsr := inb(s, uartLSR); lsr&lsrOE == 0 || lsr&lsrDR == 0 {
		t.Errorf("LSR after overrun = %#02x, want OE|DR", lsr)
	}
	if lsr := inb(s, uartLSR); lsr&lsrOE != 0 {
		t.Errorf("LSR.OE not cleared by reading LSR: %#02x", lsr)
	}
	if st := s.Stats(); st.Overruns != 2 {
		t.Errorf("Overruns = %d, want 2", st.Overruns)
	}
	// Leaving loopback lets the outside in again and ungates the line.
	outb(s, uartMCR, mcrOUT2)
	if !irq.level() {
		t.Error("IRQ low after leaving loopback with data pending")
	}
	if sp := s.RXSpace(); sp != 0 {
		t.Errorf("RXSpace = %d with a full buffer", sp)
	}
}

func TestSerialModemStatus(t *testing.T) {
	for _, tc := range []struct {
		mcr  byte
		want byte // MSR line bits
	}{
		{0, msrDCD | msrDSR | msrCTS},
		{mcrDTR | mcrRTS | mcrOUT2, msrDCD | msrDSR | msrCTS},
		{mcrLoop, 0},
		{mcrLoop | mcrDTR, msrDSR},
		{mcrLoop | mcrRTS, msrCTS},
		{mcrLoop | mcrOUT1, msrRI},
		{mcrLoop | mcrOUT2, msrDCD},
		{mcrLoop | mcrOUT2 | mcrRTS, msrDCD | msrCTS},
		{mcrLoop | 0x0F, msrDCD | msrRI | msrDSR | msrCTS},
	} {
		s, _, _ := newTestSerial(t)
		outb(s, uartMCR, tc.mcr|0xE0) // bits 5-7 do not exist
		if got := inb(s, uartMCR); got != tc.mcr {
			t.Errorf("MCR wrote %#02x, read %#02x", tc.mcr|0xE0, got)
		}
		if got := inb(s, uartMSR) & 0xF0; got != tc.want {
			t.Errorf("MCR %#02x: MSR lines %#02x, want %#02x", tc.mcr, got, tc.want)
		}
	}
}

func TestSerialModemStatusDeltas(t *testing.T) {
	s, irq, _ := newTestSerial(t)
	outb(s, uartIER, ierMSI)
	outb(s, uartMCR, mcrLoop|mcrOUT1|mcrDTR)
	// Entering loopback drops DCD and CTS; DSR stays; RI rises (no TERI).
	if got := inb(s, uartMSR); got != msrRI|msrDSR|msrDDCD|msrDCTS {
		t.Errorf("MSR = %#02x, want %#02x", got, msrRI|msrDSR|msrDDCD|msrDCTS)
	}
	if got := inb(s, uartMSR); got != msrRI|msrDSR {
		t.Errorf("MSR deltas not cleared by reading: %#02x", got)
	}
	outb(s, uartMCR, mcrLoop|mcrDTR) // RI falls: trailing edge
	if got := inb(s, uartIIR); got != iirMSI {
		t.Errorf("IIR = %#02x, want modem status", got)
	}
	if got := inb(s, uartMSR); got != msrDSR|msrTERI {
		t.Errorf("MSR = %#02x, want DSR|TERI", got)
	}
	// Back out of loopback with OUT2 set: the line idles again.
	outb(s, uartMCR, mcrOUT2)
	if !irq.level() {
		t.Error("modem status interrupt not on the line after leaving loopback")
	}
	inb(s, uartMSR)
	if irq.level() {
		t.Error("IRQ still high after reading MSR")
	}
}

// TestSerialInterruptPriority checks IIR's order with every source pending:
// line status, then received data, then THRE, then modem status.
func TestSerialInterruptPriority(t *testing.T) {
	s, _, _ := newTestSerial(t)
	outb(s, uartMCR, mcrLoop) // a modem status delta
	outb(s, uartIER, ierRDI|ierTHRI|ierRLSI|ierMSI)
	for range SerialRXBuffer + 1 {
		outb(s, uartTHR, 'z') // fills RX and overruns
	}
	want := []struct {
		iir   byte
		clear func()
	}{
		{iirRLSI, func() { inb(s, uartLSR) }},
		{iirRDI, func() {
			for inb(s, uartLSR)&lsrDR != 0 {
				inb(s, uartRBR)
			}
		}},
		{iirTHRI, func() {}}, // reading IIR acknowledges it
		{iirMSI, func() { inb(s, uartMSR) }},
		{iirNoInt, func() {}},
	}
	for _, w := range want {
		if got := inb(s, uartIIR); got != w.iir {
			t.Fatalf("IIR = %#02x, want %#02x", got, w.iir)
		}
		w.clear()
	}
}

func TestSerialOUT2GatesIRQ(t *testing.T) {
	s, irq, _ := newTestSerial(t)
	outb(s, uartIER, ierRDI)
	s.Enqueue([]byte{'a'})
	if irq.level() {
		t.Fatal("IRQ high with OUT2 clear")
	}
	for _, tc := range []struct {
		mcr  byte
		want bool
	}{
		{mcrOUT2, true},
		{mcrDTR | mcrRTS, false},
		{mcrOUT2 | mcrDTR | mcrRTS, true},
		{mcrOUT2 | mcrLoop, false},
		{mcrOUT2, true},
	} {
		outb(s, uartMCR, tc.mcr)
		if got := irq.level(); got != tc.want {
			t.Errorf("MCR %#02x: IRQ %v, want %v", tc.mcr, got, tc.want)
		}
	}
}

func TestSerialFIFOControl(t *testing.T) {
	s, _, _ := newTestSerial(t)
	for _, tc := range []struct {
		name    string
		fcr     byte
		enqueue string
		wantIIR byte
		wantDR  bool
	}{
		{"enable FIFOs", fcrEnable | 0xC0, "ab", iirFIFOs | iirNoInt, true},
		{"clear RX", fcrEnable | fcrClearRX, "", iirFIFOs | iirNoInt, false},
		{"clear TX", fcrEnable | fcrClearTX, "cd", iirFIFOs | iirNoInt, true},
		{"clear TX keeps RX", fcrEnable | fcrClearTX, "", iirFIFOs | iirNoInt, true},
		{"disable FIFOs clears them", 0, "", iirNoInt, false},
		{"clear bits without enable do nothing", fcrClearRX, "e", iirNoInt, true},
		{"still nothing", fcrClearRX, "", iirNoInt, true},
	} {
		outb(s, uartFCR, tc.fcr)
		s.Enqueue([]byte(tc.enqueue))
		if got := inb(s, uartIIR); got != tc.wantIIR {
			t.Errorf("%s: IIR = %#02x, want %#02x", tc.name, got, tc.wantIIR)
		}
		if got := inb(s, uartLSR)&lsrDR != 0; got != tc.wantDR {
			t.Errorf("%s: DR = %v, want %v", tc.name, got, tc.wantDR)
		}
	}
	if st := s.Stats(); st.RXFlushed != 4 {
		t.Errorf("RXFlushed = %d, want 4", st.RXFlushed)
	}
}

func TestSerialWideAndOutOfRange(t *testing.T) {
	s, _, out := newTestSerial(t)
	outb(s, uartSCR, 0x42)
	for _, tc := range []struct {
		name string
		off  uint64
		n    int
		want []byte
	}{
		{"16-bit across the end", uartSCR, 2, []byte{0x42, 0xFF}},
		{"32-bit LCR..SCR", uartLCR, 4, []byte{0, 0, lsrTHRE | lsrTEMT, serialIdleLines}},
		{"past the end", SerialPortSize, 1, []byte{0xFF}},
		{"8 bytes", 0, 8, []byte{0, 0, iirNoInt, 0, 0, lsrTHRE | lsrTEMT, serialIdleLines, 0x42}},
		{"offset near 2^64", ^uint64(0), 4, []byte{0xFF, 0xFF, 0xFF, 0xFF}},
		{"empty access", 0, 0, []byte{}},
	} {
		got := make([]byte, tc.n)
		s.Read(tc.off, got)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: read % x, want % x", tc.name, got, tc.want)
		}
	}
	// A 16-bit write at THR writes THR then IER.
	s.Write(uartTHR, []byte{'Q', ierRDI})
	if out.String() != "Q" || inb(s, uartIER) != ierRDI {
		t.Errorf("16-bit write: output %q IER %#02x", out.String(), inb(s, uartIER))
	}
	s.Write(^uint64(0), []byte{1, 2, 3, 4}) // wraps past 2^64: must touch nothing
	s.Write(SerialPortSize, []byte{'X'})
	if out.String() != "Q" || inb(s, uartIER) != ierRDI {
		t.Errorf("out-of-range writes changed state: output %q IER %#02x", out.String(), inb(s, uartIER))
	}
}

type failingWriter struct{}

func (failingWriter) Write(p []byte) (int, error) { return 0, errors.New("broken pipe") }

func TestSerialOutputErrors(t *testing.T) {
	irq := &fakeIRQ{err: errors.New("no irqchip")}
	s := NewSerial(failingWriter{}, irq, nil)
	outb(s, uartMCR, mcrOUT2)
	outb(s, uartIER, ierTHRI) // the IRQ error is logged, not fatal
	for range 3 {
		outb(s, uartTHR, 'x')
	}
	if st := s.Stats(); st.TXErrors != 3 || st.TXBytes != 0 {
		t.Errorf("stats %+v, want 3 TX errors", st)
	}
	if inb(s, uartLSR)&lsrTHRE == 0 {
		t.Error("THR stuck full after a write error")
	}
	NewSerial(nil, nil, nil).Write(uartTHR, []byte{'x'}) // nil writer and line
}

// TestSerialConcurrent runs a feeder and two vCPU-like readers/writers at
// once, for the race detector, and checks every byte arrives once, in order.
func TestSerialConcurrent(t *testing.T) {
	s, _, out := newTestSerial(t)
	outb(s, uartMCR, mcrOUT2)
	outb(s, uartIER, ierRDI|ierTHRI)
	const n = 2000
	in := make([]byte, n)
	for i := range in {
		in[i] = byte(i % 251)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the terminal feeder
		defer wg.Done()
		rest := in
		for len(rest) > 0 {
			k := s.Enqueue(rest)
			rest = rest[k:]
			if len(rest) > 0 {
				select {
				case <-s.RXDrained():
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
	}()
	go func() { // a vCPU transmitting
		defer wg.Done()
		for range n {
			outb(s, uartTHR, '.')
			inb(s, uartIIR)
		}
	}()
	var got []byte
	for len(got) < n {
		if inb(s, uartLSR)&lsrDR != 0 {
			got = append(got, inb(s, uartRBR))
		}
	}
	wg.Wait()
	if !bytes.Equal(got, in) {
		t.Error("received bytes differ from those queued")
	}
	if len(out.String()) != n {
		t.Errorf("transmitted %d bytes, want %d", len(out.String()), n)
	}
}

func BenchmarkSerialTransmit(b *testing.B) {
	s := NewSerial(io.Discard, devices.IRQLineFunc(func(bool) error { return nil }), nil)
	outb(s, uartMCR, mcrOUT2)
	outb(s, uartIER, ierTHRI)
	buf := []byte{'x'}
	lsr := make([]byte, 1)
	b.ReportAllocs()
	for b.Loop() {
		s.Read(uartLSR, lsr)
		s.Write(uartTHR, buf)
	}
}

// FuzzSerial drives random register accesses and input; the UART must
// never panic and the IRQ line must only be driven on changes.
func FuzzSerial(f *testing.F) {
	f.Add([]byte{1, 4, 0x08, 1, 1, 0x0F, 2, 0, 'a', 0, 0, 0, 0, 2, 0, 0, 5, 0})
	f.Add([]byte{1, 4, 0x1F, 1, 0, 'x', 9, 7, 0xFF, 13, 200, 1, 3, 3, 3})
	f.Add([]byte{1, 3, 0x80, 1, 0, 1, 1, 1, 0, 1, 3, 3, 0, 2, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		irq := &fakeIRQ{}
		s := NewSerial(io.Discard, irq, nil)
		for len(ops) >= 3 {
			kind, off, val := ops[0], uint64(ops[1]), ops[2]
			ops = ops[3:]
			if off == 0xFF {
				off = ^uint64(0)
			}
			data := make([]byte, []int{1, 2, 4, 8}[kind>>2&3])
			for i := range data {
				data[i] = val + byte(i)
			}
			switch kind & 3 {
			case 0:
				s.Read(off, data)
			case 1:
				s.Write(off, data)
			case 2:
				if n := s.Enqueue(data); n < 0 || n > len(data) {
					t.Fatalf("Enqueue returned %d for %d bytes", n, len(data))
				}
			case 3:
				if sp := s.RXSpace(); sp < 0 || sp > SerialRXBuffer {
					t.Fatalf("RXSpace = %d", sp)
				}
			}
		}
		h := irq.take()
		for i := 1; i < len(h); i++ {
			if h[i] == h[i-1] {
				t.Fatalf("IRQ driven to %v twice in a row: %v", h[i], h)
			}
		}
		if len(h) > 0 && !h[0] {
			t.Fatalf("IRQ first driven low: %v", h)
		}
	})
}
