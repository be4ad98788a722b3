package legacy

import (
	"log/slog"
	"sync"
	"time"

	"github.com/kvmm/kvmm/devices"
	"github.com/kvmm/kvmm/layout"
)

// CMOS indices of the clock (MC146818A data sheet, Figure 3).
const (
	cmosSize = 128

	rtcSeconds      = 0x00
	rtcSecondsAlarm = 0x01
	rtcMinutes      = 0x02
	rtcMinutesAlarm = 0x03
	rtcHours        = 0x04
	rtcHoursAlarm   = 0x05
	rtcWeekday      = 0x06
	rtcDay          = 0x07
	rtcMonth        = 0x08
	rtcYear         = 0x09
	rtcRegA         = 0x0A
	rtcRegB         = 0x0B
	rtcRegC         = 0x0C
	rtcRegD         = 0x0D

	// CMOSCentury is the CMOS index of the century byte, the PC convention
	// the ACPI FADT's CENTURY field points an OS at. The RTC counts it as
	// part of the clock.
	CMOSCentury = 0x32
)

// Register A: update in progress, divider chain select, rate select.
const (
	regAUIP     = 1 << 7
	regADV      = 0x70 // divider bits
	regADV32k   = 0x20 // 32.768 kHz time base: the chain runs
	regARS      = 0x0F // periodic rate select
	regADefault = regADV32k | 0x06
)

// Register B.
const (
	regBSET    = 1 << 7 // hold updates so the clock can be set
	regBPIE    = 1 << 6
	regBAIE    = 1 << 5
	regBUIE    = 1 << 4
	regBBinary = 1 << 2 // DM: binary rather than BCD
	regB24h    = 1 << 1
)

// Register C: flags, cleared by reading it. PF, AF and UF sit at the same
// bit positions as their enables in register B.
const (
	regCIRQF  = 1 << 7
	regCPF    = 1 << 6
	regCAF    = 1 << 5
	regCUF    = 1 << 4
	regCFlags = regCPF | regCAF | regCUF
)

// regDVRT is register D's valid-RAM-and-time bit: the battery is fine.
const regDVRT = 1 << 7

// CMOS memory-size bytes as PC BIOSes and SeaBIOS read them (QEMU's
// pc_cmos_init fills the same ones).
const (
	cmosBaseMem      = 0x15 // KiB below 1 MiB, 16 bits
	cmosExtMem       = 0x17 // KiB from 1 MiB up, capped at 0xFFFF, 16 bits
	cmosExtMemCopy   = 0x30 // the same again, where POST reports it
	cmosMemAbove16M  = 0x34 // 64 KiB units from 16 MiB to 4 GiB, 16 bits
	cmosMemAbove4G   = 0x5B // 64 KiB units above 4 GiB, 24 bits
	memUnit64K       = 64 * layout.KiB
	baseMemKiB       = 640
	maxCMOSMem16bits = 0xFFFF
	maxCMOSMem24bits = 0xFFFFFF
)

// Timing of the update cycle.
const (
	// rtcUIPWindow is how long before each second boundary register A's
	// UIP bit reads 1: 244 µs, the data sheet's warning time (8 periods of
	// the 32.768 kHz time base), as QEMU models it. The registers change
	// atomically here, so a guest that waits for UIP to clear reads a
	// consistent time either way.
	rtcUIPWindow = 244140 * time.Nanosecond
	// rtcDividerStart is when the first update follows the divider chain
	// leaving reset (data sheet: "one-half second later").
	rtcDividerStart = 500 * time.Millisecond
	// rtcTimeBase is the frequency the periodic rates divide.
	rtcTimeBase = 32768
	// rtcIdleRetry is the least a timer that fired early waits again. A
	// real clock never fires early; an injected or stepped one can stand
	// still, and this keeps the timer from spinning on it.
	rtcIdleRetry = 10 * time.Millisecond
)

// RTC is the MC146818 CMOS real-time clock with its 128 bytes of CMOS.
//
// The time registers are computed from an injected clock plus an offset
// the guest sets, so nothing ticks while nobody looks. Interrupts (alarm,
// update-ended, periodic) are served by one time.Timer armed for the next
// event the guest enabled; it runs whether or not a vCPU does, which is
// what lets the alarm wake an S3-suspended VM through SetOnAlarm. The
// update-ended and periodic events are not re-armed while their flag is
// still set in register C, so the timer runs no faster than the guest
// reads C, whatever rate it programs; the alarm re-arms after each match
// (at most once a second) so OnAlarm sees every one.
//
// vCPU threads and the timer goroutine share the state under one mutex.
type RTC struct {
	clock func() time.Time
	log   *slog.Logger
	limit logLimiter

	mu    sync.Mutex
	index byte
	cmos  [cmosSize]byte // the time registers hold the time only while frozen
	// Guest time is the host clock plus offsetSec seconds and offsetNsec
	// nanoseconds, split so the guest can set any year its registers hold
	// (a time.Duration spans only ±292 years).
	offsetSec  int64
	offsetNsec int64
	// phaseRef is the host instant the divider chain's sub-second phase
	// counts from while the clock is frozen; it picks the fraction of a
	// second the clock resumes at.
	phaseRef time.Time
	irq      irqWire

	timer                       *time.Timer
	gen                         uint64    // incremented per arm, so a stale timer callback does nothing
	alarmAt, updateAt, periodAt time.Time // armed events in guest time; zero = not armed
	onAlarm                     func()
	closed                      bool
}

var _ devices.Device = (*RTC)(nil)

// NewRTC returns the RTC with the clock at clock()'s time in UTC, in BCD
// and 24-hour mode as a PC BIOS leaves it, and the CMOS memory-size bytes
// filled from memBelow4G and memAbove4G (bytes of guest RAM below and above
// 4 GiB). irq is layout.RTCIRQ's line (nil: not wired); clock nil means
// time.Now; log nil discards. Close stops its timer.
func NewRTC(irq devices.IRQLine, memBelow4G, memAbove4G uint64, clock func() time.Time, log *slog.Logger) *RTC {
	if clock == nil {
		clock = time.Now
	}
	r := &RTC{clock: clock, log: orDiscard(log), irq: irqWire{line: irq}}
	r.cmos[rtcRegA] = regADefault
	r.cmos[rtcRegB] = regB24h
	r.cmos[rtcRegD] = regDVRT
	r.setMemorySize(memBelow4G, memAbove4G)
	return r
}

// SetOnAlarm installs f, called each time the alarm matches while AIE is
// set, after AF and the interrupt are raised. It runs on the timer's
// goroutine or a vCPU thread, without the RTC's lock held, and should not
// block.
func (r *RTC) SetOnAlarm(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onAlarm = f
}

// Close stops the RTC's timer; registers still answer, but no interrupt
// fires any more. It is safe to call more than once.
func (r *RTC) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.stopTimer()
}

// Read answers a guest IN: offset 0 is the index port, which is write-only
// and reads 0xFF; offset 1 reads the CMOS byte the index selects.
func (r *RTC) Read(offset uint64, data []byte) {
	r.mu.Lock()
	alarm := false
	for i := range data {
		data[i] = 0xFF
		if inRange(offset, i, RTCPortSize) && offset+uint64(i) == 1 {
			var a bool
			data[i], a = r.readData()
			alarm = alarm || a
		}
	}
	hook := r.onAlarm
	r.mu.Unlock()
	if alarm && hook != nil {
		hook()
	}
}

// Write answers a guest OUT byte by byte, so the common outw(idx|val<<8,
// 0x70) selects and writes in one access.
func (r *RTC) Write(offset uint64, data []byte) {
	r.mu.Lock()
	alarm := false
	for i, b := range data {
		if !inRange(offset, i, RTCPortSize) {
			continue
		}
		if offset+uint64(i) == 0 {
			// Bit 7 is the NMI mask on a PC, a gate outside the RTC;
			// KVM delivers no NMIs from here, so it is dropped.
			r.index = b &^ 0x80
			continue
		}
		alarm = r.writeData(b) || alarm
	}
	hook := r.onAlarm
	r.mu.Unlock()
	if alarm && hook != nil {
		hook()
	}
}

// readData reads the selected CMOS byte; alarm reports that catching up on
// due events fired the alarm. Called with r.mu held.
func (r *RTC) readData() (v byte, alarm bool) {
	switch idx := r.index; {
	case idx == rtcRegA:
		v = r.cmos[rtcRegA]
		if r.updateInProgress() {
			v |= regAUIP
		}
		return v, false
	case idx == rtcRegC:
		// An event due now is reported by this read without first
		// raising the line: the guest already has it, and an edge now
		// would only bring a spurious interrupt.
		now := r.guestNow()
		alarm, _ = r.catchUp(now)
		v = r.cmos[rtcRegC]
		if v&r.cmos[rtcRegB]&regCFlags != 0 {
			v |= regCIRQF
		}
		r.cmos[rtcRegC] = 0
		r.updateIRQ()
		if v&regCFlags != 0 {
			r.reschedule(now, 0) // cleared flags re-arm their events
		}
		return v, alarm
	case idx == rtcRegD:
		return regDVRT, false
	case isTimeReg(idx) && !r.frozen():
		return r.timeReg(r.guestNow(), idx), false
	default:
		return r.cmos[idx], false
	}
}

// writeData writes the selected CMOS byte. Called with r.mu held.
func (r *RTC) writeData(v byte) (alarm bool) {
	idx := r.index
	switch {
	case idx == rtcRegA || idx == rtcRegB:
		host := r.clock()
		alarm, _ = r.catchUp(r.guestAt(host))
		if idx == rtcRegA {
			v &^= regAUIP // read-only
		} else if v&regBSET != 0 {
			v &^= regBUIE // the data sheet: setting SET clears UIE
		}
		r.setControl(host, idx, v)
		r.updateIRQ() // an enable bit may meet a flag already set
		r.reschedule(r.guestAt(host), 0)
	case idx == rtcRegC || idx == rtcRegD:
		r.limit.log(r.log, slog.LevelDebug, "guest wrote a read-only RTC register; ignored", "index", idx, "value", v)
	case isTimeReg(idx):
		if r.frozen() {
			r.cmos[idx] = v
			return false
		}
		// Written while running: the clock jumps to the new value at once
		// and goes on counting from the same sub-second phase.
		host := r.clock()
		now := r.guestAt(host)
		alarm, _ = r.catchUp(now)
		r.latchTime(now)
		r.cmos[idx] = v
		r.setGuestAt(host, r.latchedTime().Add(time.Duration(now.Nanosecond())))
		r.updateIRQ()
		r.reschedule(r.guestAt(host), 0)
	case idx == rtcSecondsAlarm || idx == rtcMinutesAlarm || idx == rtcHoursAlarm:
		now := r.guestNow()
		alarm, _ = r.catchUp(now)
		r.cmos[idx] = v
		r.updateIRQ()
		r.reschedule(now, 0)
	default:
		r.cmos[idx] = v // plain CMOS storage, shutdown status included
	}
	return alarm
}

// setControl stores register A or B and handles the clock stopping or
// starting: frozen, the time registers hold a snapshot the guest may
// rewrite; thawed, the clock counts on from what they hold.
func (r *RTC) setControl(host time.Time, idx, v byte) {
	wasFrozen, wasStopped := r.frozen(), r.dividerStopped()
	if !wasFrozen {
		now := r.guestAt(host)
		r.latchTime(now)
		// The divider chain keeps its phase while only SET holds the
		// registers; remember where in the second it is.
		r.phaseRef = host.Add(-time.Duration(now.Nanosecond()))
	}
	r.cmos[idx] = v
	if wasStopped && !r.dividerStopped() {
		r.phaseRef = host.Add(-(time.Second - rtcDividerStart))
	}
	if wasFrozen && !r.frozen() {
		frac := host.Sub(r.phaseRef) % time.Second
		if frac < 0 {
			frac += time.Second
		}
		t := r.latchedTime().Add(frac)
		r.setGuestAt(host, t)
		r.limit.log(r.log, slog.LevelDebug, "guest set the RTC", "time", t, "host", host.UTC())
	}
}

// frozen reports whether the clock is stopped: SET holds updates, or the
// divider chain is in reset or a test mode (QEMU's rule).
func (r *RTC) frozen() bool { return r.cmos[rtcRegB]&regBSET != 0 || r.dividerStopped() }

func (r *RTC) dividerStopped() bool { return r.cmos[rtcRegA]&regADV > regADV32k }

func (r *RTC) guestNow() time.Time { return r.guestAt(r.clock()) }

func (r *RTC) guestAt(host time.Time) time.Time {
	return time.Unix(host.Unix()+r.offsetSec, int64(host.Nanosecond())+r.offsetNsec).UTC()
}

// setGuestAt makes the guest clock read guest at host time host.
func (r *RTC) setGuestAt(host, guest time.Time) {
	sec := guest.Unix() - host.Unix()
	nsec := int64(guest.Nanosecond()) - int64(host.Nanosecond())
	if nsec < 0 {
		nsec += int64(time.Second)
		sec--
	}
	r.offsetSec, r.offsetNsec = sec, nsec
}

// updateInProgress is register A's UIP: set in the last rtcUIPWindow of
// every second while the clock runs.
func (r *RTC) updateInProgress() bool {
	if r.frozen() {
		return false
	}
	return time.Second-time.Duration(r.guestNow().Nanosecond()) <= rtcUIPWindow
}

// isTimeReg reports whether idx is a register that counts time.
func isTimeReg(idx byte) bool {
	switch idx {
	case rtcSeconds, rtcMinutes, rtcHours, rtcWeekday, rtcDay, rtcMonth, rtcYear, CMOSCentury:
		return true
	}
	return false
}

// toReg encodes 0-99 in the data mode register B selects.
func (r *RTC) toReg(v int) byte {
	if r.cmos[rtcRegB]&regBBinary != 0 {
		return byte(v)
	}
	return byte(v/10<<4 | v%10)
}

// fromReg decodes a register; invalid BCD digits decode to out-of-range
// numbers, which time.Date normalises as the guest's problem.
func (r *RTC) fromReg(b byte) int {
	if r.cmos[rtcRegB]&regBBinary != 0 {
		return int(b)
	}
	return int(b>>4)*10 + int(b&0x0F)
}

// hourReg encodes an hour 0-23; in 12-hour mode as 1-12 with bit 7 for PM.
func (r *RTC) hourReg(h int) byte {
	if r.cmos[rtcRegB]&regB24h != 0 {
		return r.toReg(h)
	}
	h12 := h % 12
	if h12 == 0 {
		h12 = 12
	}
	b := r.toReg(h12)
	if h >= 12 {
		b |= 0x80
	}
	return b
}

func (r *RTC) hourFromReg(b byte) int {
	if r.cmos[rtcRegB]&regB24h != 0 {
		return r.fromReg(b)
	}
	h := r.fromReg(b & 0x7F)
	if h == 12 {
		h = 0
	}
	if b&0x80 != 0 {
		h += 12
	}
	return h
}

func mod100(v int) int { return (v%100 + 100) % 100 }

// timeReg renders one time register for guest time t.
func (r *RTC) timeReg(t time.Time, idx byte) byte {
	switch idx {
	case rtcSeconds:
		return r.toReg(t.Second())
	case rtcMinutes:
		return r.toReg(t.Minute())
	case rtcHours:
		return r.hourReg(t.Hour())
	case rtcWeekday:
		// Derived from the date (Sunday = 1), not counted on its own:
		// a weekday the guest writes is not kept once the clock runs.
		return r.toReg(int(t.Weekday()) + 1)
	case rtcDay:
		return r.toReg(t.Day())
	case rtcMonth:
		return r.toReg(int(t.Month()))
	case rtcYear:
		return r.toReg(mod100(t.Year()))
	case CMOSCentury:
		return r.toReg(mod100(t.Year() / 100))
	}
	return r.cmos[idx]
}

// latchTime copies guest time t into the time registers.
func (r *RTC) latchTime(t time.Time) {
	for _, idx := range [...]byte{rtcSeconds, rtcMinutes, rtcHours, rtcWeekday, rtcDay, rtcMonth, rtcYear, CMOSCentury} {
		r.cmos[idx] = r.timeReg(t, idx)
	}
}

// latchedTime decodes the time registers (whole seconds).
func (r *RTC) latchedTime() time.Time {
	c := &r.cmos
	year := r.fromReg(c[CMOSCentury])*100 + r.fromReg(c[rtcYear])
	return time.Date(year, time.Month(r.fromReg(c[rtcMonth])), r.fromReg(c[rtcDay]),
		r.hourFromReg(c[rtcHours]), r.fromReg(c[rtcMinutes]), r.fromReg(c[rtcSeconds]), 0, time.UTC)
}

// updateIRQ recomputes IRQF from the flags and their enables and drives
// the line from it; it stays high until the guest reads register C.
func (r *RTC) updateIRQ() {
	c := r.cmos[rtcRegC] &^ regCIRQF
	if c&r.cmos[rtcRegB]&regCFlags != 0 {
		c |= regCIRQF
	}
	r.cmos[rtcRegC] = c
	if err := r.irq.set(c&regCIRQF != 0); err != nil {
		r.limit.log(r.log, slog.LevelWarn, "RTC interrupt", "err", err)
	}
}

// catchUp sets the flags of the armed events due by guest time now, as the
// update cycles up to now would have. It runs before any state change so
// an event a timer has not delivered yet is not lost to the change; the
// caller then drives the line (updateIRQ) from the resulting state.
func (r *RTC) catchUp(now time.Time) (alarm, fired bool) {
	due := func(t time.Time) bool { return !t.IsZero() && !now.Before(t) }
	if due(r.alarmAt) {
		r.cmos[rtcRegC] |= regCAF
		r.alarmAt = time.Time{}
		alarm, fired = true, true
	}
	if due(r.updateAt) {
		r.cmos[rtcRegC] |= regCUF
		r.updateAt = time.Time{}
		fired = true
	}
	if due(r.periodAt) {
		r.cmos[rtcRegC] |= regCPF
		r.periodAt = time.Time{}
		fired = true
	}
	return alarm, fired
}

// reschedule arms the timer for the earliest event the guest enabled,
// computed afresh from guest time now, waiting at least minDelay.
func (r *RTC) reschedule(now time.Time, minDelay time.Duration) {
	r.alarmAt, r.updateAt, r.periodAt = time.Time{}, time.Time{}, time.Time{}
	if r.closed || r.frozen() {
		r.stopTimer()
		return
	}
	b, c := r.cmos[rtcRegB], r.cmos[rtcRegC]
	var next time.Time
	consider := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if b&regBAIE != 0 {
		// Armed even while AF is set: each match must reach OnAlarm.
		if t, ok := nextAlarm(now, r.alarmSpec()); ok {
			r.alarmAt = t
			consider(t)
		}
	}
	if b&regBUIE != 0 && c&regCUF == 0 {
		r.updateAt = now.Add(time.Second - time.Duration(now.Nanosecond()))
		consider(r.updateAt)
	}
	if b&regBPIE != 0 && c&regCPF == 0 {
		if t, ok := r.nextPeriodic(now); ok {
			r.periodAt = t
			consider(t)
		}
	}
	r.stopTimer()
	if next.IsZero() {
		return
	}
	gen := r.gen
	r.timer = time.AfterFunc(max(next.Sub(now), minDelay), func() { r.fire(gen) })
}

// stopTimer stops the timer and invalidates a callback already running.
func (r *RTC) stopTimer() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.gen++
}

// fire is the timer callback: deliver what is due and re-arm.
func (r *RTC) fire(gen uint64) {
	r.mu.Lock()
	if r.closed || gen != r.gen {
		r.mu.Unlock()
		return
	}
	now := r.guestNow()
	alarm, fired := r.catchUp(now)
	r.updateIRQ()
	minDelay := time.Duration(0)
	if !fired {
		minDelay = rtcIdleRetry
	}
	r.reschedule(now, minDelay)
	hook := r.onAlarm
	r.mu.Unlock()
	if alarm && hook != nil {
		hook()
	}
}

// nextPeriodic is the periodic interrupt's next tick after now. Rate
// select 1 and 2 are 256 and 128 Hz, 3-15 are 32768 >> (RS-1) Hz; ticks
// are aligned to the second, as the divider chain is.
func (r *RTC) nextPeriodic(now time.Time) (time.Time, bool) {
	rs := r.cmos[rtcRegA] & regARS
	if rs == 0 {
		return time.Time{}, false
	}
	period := int64(1) << (rs - 1) // in periods of the time base
	if rs <= 2 {
		period = int64(1) << (rs + 6)
	}
	ns := int64(now.Nanosecond())
	tick := ns * rtcTimeBase / int64(time.Second)
	next := (tick/period + 1) * period
	nextNs := (next*int64(time.Second) + rtcTimeBase - 1) / rtcTimeBase
	return now.Add(time.Duration(nextNs - ns)), true
}

// Alarm fields: a value to match, or one of these.
const (
	alarmAny   = -1 // "don't care": bits 7 and 6 set
	alarmNever = -2 // a value the time register can never hold
)

type alarmSpec struct{ hour, min, sec int }

// alarmSpec decodes the alarm registers the way the chip compares them:
// byte for byte with the time registers in the current mode.
func (r *RTC) alarmSpec() alarmSpec {
	field := func(b byte, n int, enc func(int) byte) int {
		if b&0xC0 == 0xC0 {
			return alarmAny
		}
		for v := range n {
			if enc(v) == b {
				return v
			}
		}
		return alarmNever
	}
	return alarmSpec{
		hour: field(r.cmos[rtcHoursAlarm], 24, r.hourReg),
		min:  field(r.cmos[rtcMinutesAlarm], 60, r.toReg),
		sec:  field(r.cmos[rtcSecondsAlarm], 60, r.toReg),
	}
}

// nextAlarm is the first whole second after now that matches a, found by
// jumping field by field (a handful of steps, not a scan of the day).
func nextAlarm(now time.Time, a alarmSpec) (time.Time, bool) {
	if a.hour == alarmNever || a.min == alarmNever || a.sec == alarmNever {
		return time.Time{}, false
	}
	t := time.Unix(now.Unix()+1, 0).UTC()
	for range 16 {
		y, mo, d := t.Date()
		h, mi, s := t.Clock()
		switch {
		case a.hour >= 0 && h != a.hour:
			if h > a.hour {
				d++
			}
			t = time.Date(y, mo, d, a.hour, 0, 0, 0, time.UTC)
		case a.min >= 0 && mi != a.min:
			if mi > a.min {
				h++
			}
			t = time.Date(y, mo, d, h, a.min, 0, 0, time.UTC)
		case a.sec >= 0 && s != a.sec:
			if s > a.sec {
				mi++
			}
			t = time.Date(y, mo, d, h, mi, a.sec, 0, time.UTC)
		default:
			return t, true
		}
	}
	return time.Time{}, false // not reached: every field converges in two steps
}

// setMemorySize fills the CMOS memory-size bytes.
func (r *RTC) setMemorySize(below, above uint64) {
	put16 := func(idx int, v uint64) {
		r.cmos[idx], r.cmos[idx+1] = byte(v), byte(v>>8)
	}
	put16(cmosBaseMem, min(below/layout.KiB, baseMemKiB))
	var ext uint64
	if below > layout.MiB {
		ext = min((below-layout.MiB)/layout.KiB, maxCMOSMem16bits)
	}
	put16(cmosExtMem, ext)
	put16(cmosExtMemCopy, ext)
	var mid uint64
	if below > 16*layout.MiB {
		mid = min((below-16*layout.MiB)/memUnit64K, maxCMOSMem16bits)
	}
	put16(cmosMemAbove16M, mid)
	high := min(above/memUnit64K, maxCMOSMem24bits)
	r.cmos[cmosMemAbove4G], r.cmos[cmosMemAbove4G+1], r.cmos[cmosMemAbove4G+2] = byte(high), byte(high>>8), byte(high>>16)
}
