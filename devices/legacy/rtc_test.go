package legacy

import (
	"bytes"
	"testing"
	"time"
)

// rtcBase is a Saturday afternoon, a quarter into the second.
var rtcBase = time.Date(2024, time.March, 9, 13, 45, 56, 250_000_000, time.UTC)

func newTestRTC(t *testing.T, clock func() time.Time) (*RTC, *fakeIRQ) {
	t.Helper()
	irq := &fakeIRQ{}
	r := NewRTC(irq, 0, 0, clock, nil)
	t.Cleanup(r.Close)
	return r, irq
}

func cmosRead(r *RTC, idx byte) byte {
	outb(r, 0, idx)
	return inb(r, 1)
}

func cmosWrite(r *RTC, idx, v byte) {
	outb(r, 0, idx)
	outb(r, 1, v)
}

// realClock runs at real speed from start, so real timers meet it.
func realClock(start time.Time) func() time.Time {
	t0 := time.Now()
	return func() time.Time { return start.Add(time.Since(t0)) }
}

func TestRTCTimeFormats(t *testing.T) {
	const (
		bcd24 = regB24h
		bin24 = regB24h | regBBinary
		bcd12 = 0
		bin12 = regBBinary
	)
	at := func(h int) time.Time { return time.Date(2024, 3, 9, h, 45, 56, 0, time.UTC) }
	for _, tc := range []struct {
		name string
		now  time.Time
		regB byte
		want map[byte]byte
	}{
		{"BCD 24h", rtcBase, bcd24, map[byte]byte{
			rtcSeconds: 0x56, rtcMinutes: 0x45, rtcHours: 0x13, rtcWeekday: 0x07,
			rtcDay: 0x09, rtcMonth: 0x03, rtcYear: 0x24, CMOSCentury: 0x20}},
		{"binary 24h", rtcBase, bin24, map[byte]byte{
			rtcSeconds: 56, rtcMinutes: 45, rtcHours: 13, rtcWeekday: 7,
			rtcDay: 9, rtcMonth: 3, rtcYear: 24, CMOSCentury: 20}},
		{"BCD 12h PM", rtcBase, bcd12, map[byte]byte{rtcHours: 0x81, rtcMinutes: 0x45}},
		{"binary 12h PM", rtcBase, bin12, map[byte]byte{rtcHours: 0x81}},
		{"BCD 12h midnight", at(0), bcd12, map[byte]byte{rtcHours: 0x12}},
		{"BCD 12h 1 AM", at(1), bcd12, map[byte]byte{rtcHours: 0x01}},
		{"BCD 12h noon", at(12), bcd12, map[byte]byte{rtcHours: 0x92}},
		{"BCD 12h 11 PM", at(23), bcd12, map[byte]byte{rtcHours: 0x91}},
		{"binary 12h 11 PM", at(23), bin12, map[byte]byte{rtcHours: 0x8B}},
		{"binary 24h 11 PM", at(23), bin24, map[byte]byte{rtcHours: 23}},
		{"Sunday is 1", time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC), bcd24, map[byte]byte{rtcWeekday: 1}},
		{"year 2100", time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), bcd24, map[byte]byte{rtcYear: 0x00, CMOSCentury: 0x21}},
	} {
		clk := newFakeClock(tc.now)
		r, _ := newTestRTC(t, clk.now)
		cmosWrite(r, rtcRegB, tc.regB)
		for idx, want := range tc.want {
			if got := cmosRead(r, idx); got != want {
				t.Errorf("%s: register %#02x = %#02x, want %#02x", tc.name, idx, got, want)
			}
		}
	}
}

func TestRTCCounts(t *testing.T) {
	clk := newFakeClock(rtcBase)
	r, _ := newTestRTC(t, clk.now)
	clk.advance(3*time.Second + 750*time.Millisecond)
	if got := uint16(cmosRead(r, rtcMinutes))<<8 | uint16(cmosRead(r, rtcSeconds)); got != 0x4600 {
		t.Errorf("after 3.75 s: min:sec = %#04x, want 0x4600", got)
	}
}

// TestRTCSetTimeLinux replays Linux's mc146818_set_time: SET and the
// divider reset held while the registers are written, then released; the
// first update follows half a second later.
func TestRTCSetTimeLinux(t *testing.T) {
	clk := newFakeClock(rtcBase)
	r, _ := newTestRTC(t, clk.now)
	saveB := cmosRead(r, rtcRegB)
	cmosWrite(r, rtcRegB, saveB|regBSET)
	saveA := cmosRead(r, rtcRegA)
	cmosWrite(r, rtcRegA, saveA|0x60) // RTC_DIV_RESET2
	for _, w := range []struct{ idx, v byte }{
		{rtcYear, 0x31}, {rtcMonth, 0x12}, {rtcDay, 0x31},
		{rtcHours, 0x23}, {rtcMinutes, 0x59}, {rtcSeconds, 0x58},
	} {
		cmosWrite(r, w.idx, w.v)
	}
	clk.advance(5 * time.Second) // frozen: nothing moves
	if got := cmosRead(r, rtcSeconds); got != 0x58 {
		t.Errorf("frozen seconds = %#02x, want 0x58", got)
	}
	if a := cmosRead(r, rtcRegA); a&regAUIP != 0 {
		t.Errorf("UIP set while frozen: %#02x", a)
	}
	cmosWrite(r, rtcRegB, saveB)
	clk.advance(time.Second) // still frozen by the divider
	if got := cmosRead(r, rtcSeconds); got != 0x58 {
		t.Errorf("seconds with the divider in reset = %#02x, want 0x58", got)
	}
	cmosWrite(r, rtcRegA, saveA)
	for _, st := range []struct {
		advance time.Duration
		want    map[byte]byte
	}{
		{499 * time.Millisecond, map[byte]byte{rtcSeconds: 0x58}},
		{1 * time.Millisecond, map[byte]byte{rtcSeconds: 0x59}},
		{time.Second, map[byte]byte{
			rtcSeconds: 0x00, rtcMinutes: 0x00, rtcHours: 0x00, rtcDay: 0x01,
			rtcMonth: 0x01, rtcYear: 0x32, CMOSCentury: 0x20, rtcWeekday: 0x05}},
	} {
		clk.advance(st.advance)
		for idx, want := range st.want {
			if got := cmosRead(r, idx); got != want {
				t.Errorf("%v after release: register %#02x = %#02x, want %#02x", st.advance, idx, got, want)
			}
		}
	}
}

// TestRTCSetBitOnly: with the divider running, SET holds the registers but
// the clock resumes at the divider's sub-second phase.
func TestRTCSetBitOnly(t *testing.T) {
	clk := newFakeClock(rtcBase) // phase .25
	r, _ := newTestRTC(t, clk.now)
	cmosWrite(r, rtcRegB, regB24h|regBSET|regBUIE)
	if b := cmosRead(r, rtcRegB); b != regB24h|regBSET {
		t.Errorf("B = %#02x: setting SET must clear UIE", b)
	}
	cmosWrite(r, rtcSeconds, 0x10)
	clk.advance(2 * time.Second)
	cmosWrite(r, rtcRegB, regB24h)
	clk.advance(740 * time.Millisecond) // phase .99
	if got := cmosRead(r, rtcSeconds); got != 0x10 {
		t.Errorf("seconds = %#02x, want 0x10", got)
	}
	clk.advance(20 * time.Millisecond)
	if got := cmosRead(r, rtcSeconds); got != 0x11 {
		t.Errorf("seconds = %#02x, want 0x11", got)
	}
}

func TestRTCWriteWhileRunning(t *testing.T) {
	clk := newFakeClock(rtcBase)
	r, _ := newTestRTC(t, clk.now)
	cmosWrite(r, rtcMinutes, 0x07)
	cmosWrite(r, rtcWeekday, 0x03) // derived from the date: not kept
	if got := cmosRead(r, rtcMinutes); got != 0x07 {
		t.Errorf("minutes = %#02x, want 0x07", got)
	}
	if got := cmosRead(r, rtcWeekday); got != 0x07 {
		t.Errorf("weekday = %#02x, want 0x07 (Saturday)", got)
	}
	clk.advance(4 * time.Second)
	if got := uint16(cmosRead(r, rtcMinutes))<<8 | uint16(cmosRead(r, rtcSeconds)); got != 0x0800 {
		t.Errorf("min:sec = %#04x, want 0x0800", got)
	}
	// Switching to binary shows the same time in the other encoding.
	cmosWrite(r, rtcRegB, regB24h|regBBinary)
	if got := cmosRead(r, rtcMinutes); got != 8 {
		t.Errorf("binary minutes = %d, want 8", got)
	}
}

// TestRTCYearsOutOfDurationRange: a guest may set any year its registers
// hold, far beyond the ±292 years a time.Duration offset spans, and the
// clock rolls over like the two-digit counters it is made of.
func TestRTCYearsOutOfDurationRange(t *testing.T) {
	clk := newFakeClock(rtcBase)
	r, _ := newTestRTC(t, clk.now)
	cmosWrite(r, rtcRegB, regB24h|regBSET)
	for _, w := range []struct{ idx, v byte }{
		{CMOSCentury, 0x99}, {rtcYear, 0x99}, {rtcMonth, 0x12}, {rtcDay, 0x31},
		{rtcHours, 0x23}, {rtcMinutes, 0x59}, {rtcSeconds, 0x59},
	} {
		cmosWrite(r, w.idx, w.v)
	}
	cmosWrite(r, rtcRegB, regB24h)
	if c, y := cmosRead(r, CMOSCentury), cmosRead(r, rtcYear); c != 0x99 || y != 0x99 {
		t.Errorf("year = %02x%02x, want 9999", c, y)
	}
	clk.advance(time.Second)
	for idx, want := range map[byte]byte{CMOSCentury: 0x00, rtcYear: 0x00, rtcMonth: 0x01, rtcDay: 0x01, rtcSeconds: 0x00} {
		if got := cmosRead(r, idx); got != want {
			t.Errorf("after rollover: register %#02x = %#02x, want %#02x", idx, got, want)
		}
	}
}

func TestRTCRegisters(t *testing.T) {
	clk := newFakeClock(rtcBase)
	r, _ := newTestRTC(t, clk.now)
	if v := inb(r, 0); v != 0xFF {
		t.Errorf("index port reads %#02x, want 0xFF", v)
	}
	cmosWrite(r, rtcRegD, 0)
	if v := cmosRead(r, rtcRegD); v != regDVRT {
		t.Errorf("D = %#02x, want VRT", v)
	}
	cmosWrite(r, rtcRegA, 0xA6)
	if v := cmosRead(r, rtcRegA); v != 0x26 {
		t.Errorf("A = %#02x, want 0x26 (UIP is read-only)", v)
	}
	clk.advance(750*time.Millisecond - 100*time.Microsecond) // 100 µs before the second
	if v := cmosRead(r, rtcRegA); v != 0xA6 {
		t.Errorf("A just before the update = %#02x, want UIP set", v)
	}
	clk.advance(200 * time.Microsecond)
	if v := cmosRead(r, rtcRegA); v != 0x26 {
		t.Errorf("A just after the update = %#02x, want UIP clear", v)
	}
	// Bit 7 of the index is the NMI mask: ignored.
	outb(r, 0, 0x80|0x0F)
	outb(r, 1, 0x0A)
	if v := cmosRead(r, 0x0F); v != 0x0A {
		t.Errorf("shutdown status = %#02x, want 0x0A", v)
	}
	// outw(idx | val << 8, 0x70): index and data in one access.
	r.Write(0, []byte{0x40, 0x5A})
	if v := cmosRead(r, 0x40); v != 0x5A {
		t.Errorf("CMOS[0x40] = %#02x after a 16-bit write, want 0x5A", v)
	}
	for _, idx := range []byte{0x0E, 0x33, 0x7F} {
		cmosWrite(r, idx, idx^0xFF)
		if v := cmosRead(r, idx); v != idx^0xFF {
			t.Errorf("CMOS[%#02x] = %#02x, want %#02x", idx, v, idx^0xFF)
		}
	}
	outb(r, 0, 0x40)
	for _, tc := range []struct {
		off  uint64
		n    int
		want []byte
	}{
		{0, 2, []byte{0xFF, 0x5A}},
		{1, 4, []byte{0x5A, 0xFF, 0xFF, 0xFF}},
		{2, 1, []byte{0xFF}},
		{^uint64(0), 2, []byte{0xFF, 0xFF}},
	} {
		got := make([]byte, tc.n)
		r.Read(tc.off, got)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("read %d bytes at %#x = % x, want % x", tc.n, tc.off, got, tc.want)
		}
	}
	r.Write(^uint64(0), []byte{0x0F, 0x00}) // wraps: must not select 0x0F's data
	if v := cmosRead(r, 0x0F); v != 0x0A {
		t.Errorf("out-of-range write changed CMOS[0x0F] to %#02x", v)
	}
}

func TestRTCMemorySize(t *testing.T) {
	const (
		MiB = 1 << 20
		GiB = 1 << 30
	)
	for _, tc := range []struct {
		name         string
		below, above uint64
		want         map[byte]byte
	}{
		{"3 GiB + 5 GiB", 3 * GiB, 5 * GiB, map[byte]byte{
			0x15: 0x80, 0x16: 0x02, 0x17: 0xFF, 0x18: 0xFF, 0x30: 0xFF, 0x31: 0xFF,
			0x34: 0x00, 0x35: 0xBF, 0x5B: 0x00, 0x5C: 0x40, 0x5D: 0x01}},
		{"128 MiB", 128 * MiB, 0, map[byte]byte{
			0x15: 0x80, 0x16: 0x02, 0x17: 0xFF, 0x18: 0xFF,
			0x34: 0x00, 0x35: 0x07, 0x5B: 0, 0x5C: 0, 0x5D: 0}},
		{"16 MiB", 16 * MiB, 0, map[byte]byte{
			0x17: 0x00, 0x18: 0x3C, 0x30: 0x00, 0x31: 0x3C, 0x34: 0, 0x35: 0}},
		{"512 KiB", 512 << 10, 0, map[byte]byte{0x15: 0x00, 0x16: 0x02, 0x17: 0, 0x18: 0}},
		{"512 GiB above 4 GiB", 3 * GiB, 1 << 39, map[byte]byte{0x5B: 0x00, 0x5C: 0x00, 0x5D: 0x80}},
		{"capped", 3 * GiB, 1 << 50, map[byte]byte{0x5B: 0xFF, 0x5C: 0xFF, 0x5D: 0xFF}},
	} {
		r := NewRTC(nil, tc.below, tc.above, nil, nil)
		for idx, want := range tc.want {
			if got := cmosRead(r, idx); got != want {
				t.Errorf("%s: CMOS[%#02x] = %#02x, want %#02x", tc.name, idx, got, want)
			}
		}
		r.Close()
	}
}

// TestRTCRegisterC: flags are read-to-clear, IRQF follows flag & enable,
// and the line stays high until C is read.
func TestRTCRegisterC(t *testing.T) {
	clk := newFakeClock(rtcBase)
	r, irq := newTestRTC(t, clk.now)
	cmosWrite(r, rtcRegB, regB24h|regBUIE)
	if h := irq.take(); len(h) != 0 {
		t.Fatalf("IRQ driven %v before any update", h)
	}
	clk.advance(750 * time.Millisecond) // the update at :57
	if got := cmosRead(r, rtcRegC); got != regCIRQF|regCUF {
		t.Errorf("C = %#02x, want IRQF|UF", got)
	}
	if got := cmosRead(r, rtcRegC); got != 0 {
		t.Errorf("C read twice = %#02x, want 0", got)
	}
	if h := irq.take(); len(h) != 0 {
		t.Errorf("IRQ levels %v: a read that reports the due update must not pulse the line", h)
	}

	// A flag set while its interrupt is enabled, then disabled and
	// enabled again: IRQF (and the line) follow flag & enable.
	clk.advance(time.Second)
	outb(r, 0, rtcRegB)
	outb(r, 1, regB24h) // UIE off as the update falls due: UF without IRQF
	if irq.level() {
		t.Error("IRQ high with UIE disabled")
	}
	outb(r, 1, regB24h|regBUIE)
	if !irq.level() {
		t.Error("enabling UIE with UF set did not raise the IRQ")
	}
	if got := cmosRead(r, rtcRegC); got != regCIRQF|regCUF {
		t.Errorf("C = %#02x, want IRQF|UF", got)
	}
	if irq.level() {
		t.Error("IRQ high after reading C")
	}
	cmosWrite(r, rtcRegC, 0xFF)
	if got := cmosRead(r, rtcRegC); got != 0 {
		t.Errorf("C is writable: %#02x", got)
	}
}

func TestRTCNextAlarm(t *testing.T) {
	at := func(y int, mo time.Month, d, h, mi, s, ns int) time.Time {
		return time.Date(y, mo, d, h, mi, s, ns, time.UTC)
	}
	now := at(2024, 3, 9, 13, 45, 56, 800_000_000)
	for _, tc := range []struct {
		name string
		now  time.Time
		spec alarmSpec
		want time.Time // zero: never
	}{
		{"next second", now, alarmSpec{13, 45, 57}, at(2024, 3, 9, 13, 45, 57, 0)},
		{"all don't care", now, alarmSpec{alarmAny, alarmAny, alarmAny}, at(2024, 3, 9, 13, 45, 57, 0)},
		{"exactly now is past", at(2024, 3, 9, 13, 45, 57, 0), alarmSpec{13, 45, 57}, at(2024, 3, 10, 13, 45, 57, 0)},
		{"every minute", now, alarmSpec{alarmAny, alarmAny, 0}, at(2024, 3, 9, 13, 46, 0, 0)},
		{"every hour at :30", now, alarmSpec{alarmAny, 30, 0}, at(2024, 3, 9, 14, 30, 0, 0)},
		{"hour passed: tomorrow", now, alarmSpec{1, alarmAny, alarmAny}, at(2024, 3, 10, 1, 0, 0, 0)},
		{"same hour, later second", now, alarmSpec{13, alarmAny, 10}, at(2024, 3, 9, 13, 46, 10, 0)},
		{"earlier second this minute", now, alarmSpec{13, 45, 10}, at(2024, 3, 10, 13, 45, 10, 0)},
		{"year end", at(2024, 12, 31, 23, 59, 59, 500), alarmSpec{23, 59, 59}, at(2025, 1, 1, 23, 59, 59, 0)},
		{"leap day", at(2024, 2, 28, 23, 0, 0, 0), alarmSpec{0, 0, 0}, at(2024, 2, 29, 0, 0, 0, 0)},
		{"impossible hour", now, alarmSpec{alarmNever, 0, 0}, time.Time{}},
		{"impossible second", now, alarmSpec{alarmAny, alarmAny, alarmNever}, time.Time{}},
	} {
		got, ok := nextAlarm(tc.now, tc.spec)
		if ok != !tc.want.IsZero() || !got.Equal(tc.want) {
			t.Errorf("%s: nextAlarm = %v, %v; want %v", tc.name, got, ok, tc.want)
		}
	}
}

func TestRTCAlarmSpec(t *testing.T) {
	for _, tc := range []struct {
		name           string
		regB           byte
		hour, min, sec byte
		want           alarmSpec
	}{
		{"BCD", regB24h, 0x13, 0x45, 0x59, alarmSpec{13, 45, 59}},
		{"BCD don't care", regB24h, 0xC0, 0xFF, 0xD5, alarmSpec{alarmAny, alarmAny, alarmAny}},
		{"binary", regB24h | regBBinary, 23, 59, 0, alarmSpec{23, 59, 0}},
		{"binary 0x59 is 89", regB24h | regBBinary, 0, 0x59, 0, alarmSpec{0, alarmNever, 0}},
		{"bad BCD", regB24h, 0x24, 0x5A, 0x60, alarmSpec{alarmNever, alarmNever, alarmNever}},
		{"12h PM", 0, 0x91, 0, 0, alarmSpec{23, 0, 0}},
		{"12h midnight", 0, 0x12, 0, 0, alarmSpec{0, 0, 0}},
		{"12h has no 0", 0, 0x00, 0, 0, alarmSpec{alarmNever, 0, 0}},
	} {
		r := NewRTC(nil, 0, 0, nil, nil)
		cmosWrite(r, rtcRegB, tc.regB)
		cmosWrite(r, rtcHoursAlarm, tc.hour)
		cmosWrite(r, rtcMinutesAlarm, tc.min)
		cmosWrite(r, rtcSecondsAlarm, tc.sec)
		r.mu.Lock()
		got := r.alarmSpec()
		r.mu.Unlock()
		if got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
		r.Close()
	}
}

// TestRTCAlarmFires runs the alarm on a real timer: the clock is 500 ms
// short of the alarm second, and no register access happens meanwhile.
func TestRTCAlarmFires(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		hour, min, sec byte
	}{
		{"exact", 0x13, 0x45, 0x57},
		{"don't care hour and minute", 0xFF, 0xC0, 0x57},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, irq := newTestRTC(t, realClock(rtcBase.Add(250*time.Millisecond))) // :56.5
			fired := make(chan struct{}, 10)
			r.SetOnAlarm(func() { fired <- struct{}{} })
			cmosWrite(r, rtcSecondsAlarm, tc.sec)
			cmosWrite(r, rtcMinutesAlarm, tc.min)
			cmosWrite(r, rtcHoursAlarm, tc.hour)
			cmosWrite(r, rtcRegB, regB24h|regBAIE)
			select {
			case <-fired:
			case <-time.After(3 * time.Second):
				t.Fatal("alarm did not fire")
			}
			if !irq.level() {
				t.Error("IRQ low after the alarm")
			}
			if got := cmosRead(r, rtcRegC); got != regCIRQF|regCAF {
				t.Errorf("C = %#02x, want IRQF|AF", got)
			}
			if irq.level() || cmosRead(r, rtcRegC) != 0 {
				t.Error("reading C did not clear the alarm")
			}
		})
	}
}

func TestRTCAlarmDisabledOrClosed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		regB  byte
		close bool
	}{
		{"AIE clear", regB24h, false},
		{"closed", regB24h | regBAIE, true},
		{"SET holds the clock", regB24h | regBAIE | regBSET, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, irq := newTestRTC(t, realClock(rtcBase.Add(700*time.Millisecond))) // :56.95
			fired := make(chan struct{}, 1)
			r.SetOnAlarm(func() { fired <- struct{}{} })
			cmosWrite(r, rtcSecondsAlarm, 0xFF)
			cmosWrite(r, rtcMinutesAlarm, 0xFF)
			cmosWrite(r, rtcHoursAlarm, 0xFF)
			cmosWrite(r, rtcRegB, tc.regB)
			if tc.close {
				r.Close()
			}
			select {
			case <-fired:
				t.Fatal("alarm fired")
			case <-time.After(300 * time.Millisecond):
			}
			if irq.level() {
				t.Error("IRQ raised")
			}
		})
	}
}

func TestRTCUpdateAndPeriodicInterrupts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		regA, regB byte
		want       byte
	}{
		{"update-ended", regADefault, regB24h | regBUIE, regCIRQF | regCUF},
		{"periodic 2 Hz", regADV32k | 0x0F, regB24h | regBPIE, regCIRQF | regCPF},
		{"periodic 1024 Hz", regADefault, regB24h | regBPIE, regCIRQF | regCPF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, irq := newTestRTC(t, realClock(rtcBase.Add(650*time.Millisecond))) // :56.9
			cmosWrite(r, rtcRegA, tc.regA)
			cmosWrite(r, rtcRegB, tc.regB)
			for range 2 { // the event comes again after C is read
				irq.waitLevel(t, true, 2*time.Second)
				if got := cmosRead(r, rtcRegC); got != tc.want {
					t.Errorf("C = %#02x, want %#02x", got, tc.want)
				}
				if irq.level() {
					t.Error("IRQ high after reading C")
				}
			}
		})
	}
}

// FuzzRTC drives random register accesses and clock steps; the RTC must
// never panic, and the IRQ line must only be driven on changes.
func FuzzRTC(f *testing.F) {
	f.Add([]byte{1, 0, 0x0B, 1, 1, 0x72, 2, 0, 200, 0, 1, 0, 1, 0, 0x0C, 0, 1, 0})
	f.Add([]byte{1, 0, 0x0B, 1, 1, 0x86, 1, 0, 0x09, 1, 1, 0xFF, 1, 0, 0x0B, 1, 1, 0x06})
	f.Add([]byte{1, 0, 0x0A, 1, 1, 0x70, 1, 0, 0x0A, 1, 1, 0x21, 2, 0, 5, 0, 1, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		clk := newFakeClock(rtcBase)
		irq := &fakeIRQ{}
		r := NewRTC(irq, 1<<32, 1<<33, clk.now, nil)
		r.SetOnAlarm(func() {})
		defer r.Close()
		for len(ops) >= 3 {
			kind, off, val := ops[0], uint64(ops[1]), ops[2]
			ops = ops[3:]
			if off == 0xFF {
				off = ^uint64(0)
			}
			data := make([]byte, []int{1, 2, 4, 8}[kind>>2&3])
			for i := range data {
				data[i] = val ^ byte(i)
			}
			switch kind & 3 {
			case 0:
				r.Read(off, data)
			case 1:
				r.Write(off, data)
			case 2:
				clk.advance(time.Duration(val) * 7 * time.Millisecond)
			case 3:
				clk.advance(-time.Duration(val) * time.Hour) // a host clock step back
			}
		}
		r.Close()
		h := irq.take()
		for i := 1; i < len(h); i++ {
			if h[i] == h[i-1] {
				t.Fatalf("IRQ driven to %v twice in a row: %v", h[i], h)
			}
		}
	})
}
