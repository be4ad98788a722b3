package acpi

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kvmm/kvmm/layout"
)

// fakeSCI records every level driven, and can fail on demand.
type fakeSCI struct {
	mu     sync.Mutex
	levels []bool
	fail   int // the next fail calls return an error
}

func (s *fakeSCI) SetLevel(high bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		return errors.New("injected SCI failure")
	}
	s.levels = append(s.levels, high)
	return nil
}

func (s *fakeSCI) level() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.levels) > 0 && s.levels[len(s.levels)-1]
}

func (s *fakeSCI) history() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.levels)
}

type fakePower struct {
	mu        sync.Mutex
	poweroffs int
	resets    []string
}

func (f *fakePower) PowerOff() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.poweroffs++
}

func (f *fakePower) Reset(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resets = append(f.resets, reason)
}

func (f *fakePower) DebugExit(int) {}

func (f *fakePower) counts() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.poweroffs, len(f.resets)
}

type fakeClock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *fakeClock) now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.d
}

func (c *fakeClock) set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.d = d
}

type pmRig struct {
	*PM
	sci   *fakeSCI
	power *fakePower
	clock *fakeClock
}

func newRig(t testing.TB) *pmRig {
	t.Helper()
	r := &pmRig{sci: &fakeSCI{}, power: &fakePower{}, clock: &fakeClock{}}
	r.PM = NewPM(r.sci, r.power, r.clock.now, nil)
	return r
}

func (r *pmRig) read(off uint64, width int) uint64 {
	b := make([]byte, 8)
	r.Read(off, b[:width])
	return binary.LittleEndian.Uint64(b)
}

func (r *pmRig) write(off uint64, width int, v uint64) {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	r.Write(off, b[:width])
}

// expectedSCI is the level the registers call for, computed independently.
func (r *pmRig) expectedSCI() bool {
	sts, en := r.read(PM1StsOffset, 2), r.read(PM1EnOffset, 2)
	gsts, gen := r.read(GPE0StsOffset, 2), r.read(GPE0EnOffset, 2)
	return sts&en&(PM1StsTmr|PM1StsGbl|PM1StsPwrBtn|PM1StsSlpBtn|PM1StsRTC) != 0 || gsts&gen != 0
}

func TestPMOffsetsMatchLayoutAndFADT(t *testing.T) {
	for _, c := range []struct {
		name    string
		off     uint64
		address uint64
	}{
		{"PM1a_STS", PM1StsOffset, layout.PM1aEvtBlk},
		{"PM1a_EN", PM1EnOffset, layout.PM1aEvtBlk + pm1EvtLen/2},
		{"PM1a_CNT", PM1CntOffset, layout.PM1aCntBlk},
		{"PM_TMR", PMTmrOffset, layout.PMTmrBlk},
		{"GPE0_STS", GPE0StsOffset, layout.GPE0Blk},
		{"GPE0_EN", GPE0EnOffset, layout.GPE0Blk + layout.GPE0BlkLen/2},
		{"RESET", ResetOffset, layout.ResetReg},
	} {
		if layout.PMBase+c.off != c.address {
			t.Errorf("%s at PMBase+%#x = %#x, FADT says %#x", c.name, c.off, layout.PMBase+c.off, c.address)
		}
	}
	if PMBlockSize != 0x14 {
		t.Errorf("PMBlockSize = %#x, want 0x14", PMBlockSize)
	}
}

func TestPM1StatusWriteOneToClear(t *testing.T) {
	r := newRig(t)
	r.PressPowerButton()
	r.Wake(WakeRTC)
	want := uint16(PM1StsPwrBtn | PM1StsRTC | PM1StsWak)
	if got := r.Status(); got != want {
		t.Fatalf("Status = %#x, want %#x", got, want)
	}
	r.write(PM1StsOffset, 2, 0) // writing 0 changes nothing
	if got := r.Status(); got != want {
		t.Errorf("after writing 0: Status = %#x, want %#x", got, want)
	}
	r.write(PM1StsOffset, 2, PM1StsRTC)
	want &^= PM1StsRTC
	if got := r.read(PM1StsOffset, 2); got != uint64(want) {
		t.Errorf("after clearing RTC_STS: %#x, want %#x", got, want)
	}
	r.write(PM1StsOffset+1, 1, PM1StsPwrBtn>>8) // byte access to the high half
	want &^= PM1StsPwrBtn
	if got := r.Status(); got != want {
		t.Errorf("after a byte clear of PWRBTN_STS: %#x, want %#x", got, want)
	}
	r.write(PM1StsOffset, 2, 0xFFFF)
	if got := r.Status(); got != 0 {
		t.Errorf("after clearing all: %#x", got)
	}
}

func TestPM1EnableAndWideWrite(t *testing.T) {
	r := newRig(t)
	r.write(PM1EnOffset, 2, 0xFFFF)
	if got := r.Enable(); got != pm1EnAll {
		t.Errorf("Enable = %#x, want only the defined bits %#x", got, pm1EnAll)
	}
	r.PressPowerButton()
	// One 32-bit write clears PWRBTN_STS and sets only RTC_EN.
	r.write(PM1StsOffset, 4, uint64(PM1EnRTC)<<16|PM1StsPwrBtn)
	if r.Status() != 0 || r.Enable() != PM1EnRTC {
		t.Errorf("after 32-bit write: Status %#x Enable %#x, want 0 and %#x", r.Status(), r.Enable(), PM1EnRTC)
	}
	if got := r.read(PM1StsOffset, 4); got != uint64(PM1EnRTC)<<16 {
		t.Errorf("32-bit read of PM1_EVT = %#x", got)
	}
}

func TestSCILevel(t *testing.T) {
	r := newRig(t)
	step := func(what string, want bool) {
		t.Helper()
		if got := r.sci.level(); got != want {
			t.Errorf("%s: SCI = %v, want %v", what, got, want)
		}
		if got := r.expectedSCI(); got != want {
			t.Errorf("%s: registers call for SCI %v, test expects %v", what, got, want)
		}
	}
	r.PressPowerButton()
	step("button pressed, not enabled", false)
	r.write(PM1EnOffset, 2, PM1EnPwrBtn)
	step("PWRBTN_EN set", true)
	r.write(PM1StsOffset, 2, PM1StsPwrBtn)
	step("PWRBTN_STS cleared", false)
	r.Wake(WakeOther) // sets PWRBTN_STS again
	step("wake other with PWRBTN_EN", true)
	r.write(PM1EnOffset, 2, 0)
	step("enables cleared", false)
	r.write(PM1StsOffset, 2, 0xFFFF)
	r.write(PM1EnOffset, 2, pm1EnAll)
	r.Wake(-1) // WAK_STS alone never raises the SCI
	step("WAK_STS only", false)
	r.Wake(WakeRTC)
	step("RTC_STS with RTC_EN", true)
	r.write(PM1StsOffset, 2, 0xFFFF)
	step("all PM1 status cleared", false)

	// GPE0: status comes from devices; the guest enables and clears.
	r.mu.Lock()
	r.gpeSts = 1 << 3
	r.updateSCI()
	r.mu.Unlock()
	step("GPE3 status, not enabled", false)
	r.write(GPE0EnOffset, 1, 1<<3)
	step("GPE3 enabled", true)
	r.write(GPE0StsOffset, 2, 1<<3)
	step("GPE3 cleared", false)
	if got := r.read(GPE0EnOffset, 2); got != 1<<3 {
		t.Errorf("GPE0_EN = %#x", got)
	}

	// The line is driven only on changes.
	h := r.sci.history()
	for i := 1; i < len(h); i++ {
		if h[i] == h[i-1] {
			t.Errorf("SCI driven to %v twice in a row (history %v)", h[i], h)
		}
	}
}

func TestSCIRetriesAfterError(t *testing.T) {
	r := newRig(t)
	r.write(PM1EnOffset, 2, PM1EnPwrBtn)
	r.sci.fail = 1
	r.PressPowerButton() // SetLevel fails: the line stays low
	if r.sci.level() {
		t.Fatal("SCI high although SetLevel failed")
	}
	r.write(PM1EnOffset, 2, PM1EnPwrBtn) // any register change retries
	if !r.sci.level() {
		t.Error("SCI not raised on retry")
	}
}

func TestPM1Control(t *testing.T) {
	r := newRig(t)
	if got := r.read(PM1CntOffset, 2); got != PM1CntSCIEn {
		t.Errorf("PM1_CNT at reset = %#x, want SCI_EN", got)
	}
	r.write(PM1CntOffset, 2, 0) // SCI_EN cannot be cleared: SMI_CMD is 0
	r.write(PM1CntOffset, 2, 5<<PM1CntSlpTypShift|PM1CntBMRld|PM1CntGblRls)
	want := uint64(5<<PM1CntSlpTypShift | PM1CntBMRld | PM1CntSCIEn)
	if got := r.read(PM1CntOffset, 2); got != want {
		t.Errorf("PM1_CNT = %#x, want %#x (GBL_RLS write-only)", got, want)
	}
	r.write(PM1CntOffset, 2, 7<<PM1CntSlpTypShift|PM1CntSlpEn) // unsupported type: ignored
	if got := r.read(PM1CntOffset, 2); got&PM1CntSlpEn != 0 {
		t.Errorf("SLP_EN reads back: %#x", got)
	}
	if off, rst := r.power.counts(); off != 0 || rst != 0 {
		t.Errorf("SLP_TYP 7 caused %d poweroffs, %d resets", off, rst)
	}
}

func TestSleepDecode(t *testing.T) {
	tests := []struct {
		name        string
		writes      func(r *pmRig)
		hook        bool
		wantOff     int
		wantSuspend int
	}{
		{"S5 one write", func(r *pmRig) { r.write(PM1CntOffset, 2, SlpTypS5<<10|PM1CntSlpEn|PM1CntSCIEn) }, true, 1, 0},
		{"S3 one write", func(r *pmRig) { r.write(PM1CntOffset, 2, SlpTypS3<<10|PM1CntSlpEn) }, true, 0, 1},
		{"S3 without a hook", func(r *pmRig) { r.write(PM1CntOffset, 2, SlpTypS3<<10|PM1CntSlpEn) }, false, 0, 0},
		{"S3 as ACPICA does it: type, then type|SLP_EN", func(r *pmRig) {
			r.write(PM1CntOffset, 2, SlpTypS3<<10|PM1CntSCIEn)
			r.write(PM1CntOffset, 2, SlpTypS3<<10|PM1CntSlpEn|PM1CntSCIEn)
		}, true, 0, 1},
		{"S3 by bytes", func(r *pmRig) {
			r.write(PM1CntOffset, 1, PM1CntSCIEn)
			r.write(PM1CntOffset+1, 1, (SlpTypS3<<10|PM1CntSlpEn)>>8)
		}, true, 0, 1},
		{"S3 by a 32-bit write at PM1_CNT", func(r *pmRig) { r.write(PM1CntOffset, 4, SlpTypS3<<10|PM1CntSlpEn) }, true, 0, 1},
		{"type without SLP_EN", func(r *pmRig) { r.write(PM1CntOffset, 2, SlpTypS3<<10) }, true, 0, 0},
		{"S4 value 2 ignored", func(r *pmRig) { r.write(PM1CntOffset, 2, 2<<10|PM1CntSlpEn) }, true, 0, 0},
		{"writes elsewhere ignored", func(r *pmRig) { r.write(PM1StsOffset, 4, 0xFFFFFFFF) }, true, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			suspends := 0
			if tt.hook {
				r.SetOnSuspend(func() {
					suspends++
					// The hook may call back into PM: no lock is held.
					_ = r.Status()
				})
			}
			tt.writes(r)
			if off, _ := r.power.counts(); off != tt.wantOff {
				t.Errorf("PowerOff called %d times, want %d", off, tt.wantOff)
			}
			if suspends != tt.wantSuspend {
				t.Errorf("OnSuspend called %d times, want %d", suspends, tt.wantSuspend)
			}
		})
	}
}

func TestWake(t *testing.T) {
	for _, c := range []struct {
		reason WakeReason
		want   uint16
	}{
		{WakeOther, PM1StsWak | PM1StsPwrBtn},
		{WakeRTC, PM1StsWak | PM1StsRTC},
	} {
		r := newRig(t)
		r.write(PM1CntOffset, 2, SlpTypS3<<PM1CntSlpTypShift) // SLP_TYP without SLP_EN
		r.Wake(c.reason)
		if got := r.Status(); got != c.want {
			t.Errorf("Wake(%v): Status %#x, want %#x", c.reason, got, c.want)
		}
		if cnt := r.read(PM1CntOffset, 2); cnt&PM1CntSlpTypMask != 0 {
			t.Errorf("Wake(%v): PM1_CNT %#x still has SLP_TYP after the wake reset", c.reason, cnt)
		}
	}
}

func TestPMTimer(t *testing.T) {
	r := newRig(t)
	tick := func(d time.Duration) uint64 {
		r.clock.set(d)
		return r.read(PMTmrOffset, 4)
	}
	for _, c := range []struct {
		at   time.Duration
		want uint64
	}{
		{0, 0},
		{time.Microsecond, 3}, // 3.58 ticks, truncated
		{time.Second, PMTimerHz},
		{1500 * time.Millisecond, PMTimerHz * 3 / 2},
		{10*time.Second + 100*time.Nanosecond, 10 * PMTimerHz}, // 0.36 tick dropped
		{100 * time.Second, 100 * PMTimerHz},
	} {
		if got := tick(c.at); got != c.want {
			t.Errorf("at %v: timer %d, want %d", c.at, got, c.want)
		}
	}
	// A clock that steps back does not move the timer back.
	before := tick(20 * time.Second)
	if got := tick(19 * time.Second); got != before {
		t.Errorf("clock stepped back: timer %d, want it held at %d", got, before)
	}
	// 32 bits wide (TMR_VAL_EXT): it wraps after 2^32 ticks, ~1200 s.
	wrap := (1 << 32) * time.Second / PMTimerHz
	lo := tick(wrap - time.Second)
	hi := tick(wrap + time.Second)
	if lo < 1<<31 || hi > PMTimerHz*2 {
		t.Errorf("around the 32-bit wrap: %#x then %#x", lo, hi)
	}
	// Byte reads and writes: bytes agree with the dword; writes are dropped.
	r.clock.set(123456789 * time.Microsecond)
	dword := r.read(PMTmrOffset, 4)
	var bytewise uint64
	for i := range 4 {
		bytewise |= r.read(PMTmrOffset+uint64(i), 1) << (8 * i)
	}
	r.write(PMTmrOffset, 4, 0)
	if bytewise != dword || r.read(PMTmrOffset, 4) != dword {
		t.Errorf("timer dword %#x, by bytes %#x, after write %#x", dword, bytewise, r.read(PMTmrOffset, 4))
	}
}

func TestPMTimerDefaultClock(t *testing.T) {
	p := NewPM(nil, nil, nil, nil)
	read := func() uint32 {
		b := make([]byte, 4)
		p.Read(PMTmrOffset, b)
		return binary.LittleEndian.Uint32(b)
	}
	a := read()
	time.Sleep(2 * time.Millisecond)
	if b := read(); b <= a {
		t.Errorf("timer did not advance over 2ms: %d then %d", a, b)
	}
}

func TestResetRegister(t *testing.T) {
	r := newRig(t)
	r.write(ResetOffset, 1, 0x01)
	if _, n := r.power.counts(); n != 0 {
		t.Fatal("a value other than ResetValue reset the machine")
	}
	if got := r.read(ResetOffset, 1); got != 0 {
		t.Errorf("reset register reads %#x, want 0", got)
	}
	r.write(ResetOffset, 1, layout.ResetValue)
	r.write(ResetOffset, 2, 0xFF00|layout.ResetValue) // wider access, same low byte
	r.power.mu.Lock()
	defer r.power.mu.Unlock()
	if want := []string{"acpi reset register", "acpi reset register"}; !slices.Equal(r.power.resets, want) {
		t.Errorf("resets = %q, want %q", r.power.resets, want)
	}
}

func TestOddAccessesNeverPanic(t *testing.T) {
	r := newRig(t)
	offsets := []uint64{0, 1, 3, 5, 6, 7, 9, 0xB, 0xD, 0xF, 0x11, 0x12, 0x13, 0x14, 0x15, 0x100, math.MaxUint64 - 3, math.MaxUint64}
	for _, off := range offsets {
		for _, w := range []int{0, 1, 2, 3, 4, 8} {
			b := make([]byte, w)
			r.Read(off, b)
			for i := range b {
				if off >= PMBlockSize && b[i] != 0xFF {
					t.Errorf("read %d@%#x outside the block: byte %d = %#x, want 0xFF", w, off, i, b[i])
				}
			}
			for i := range b {
				b[i] = 0xFF
			}
			// Never SLP_EN or the reset value at those offsets, but all
			// ones elsewhere: clears status, sets enables.
			if off > ResetOffset || off+uint64(w) <= PM1CntOffset {
				r.Write(off, b)
			}
		}
	}
	if r.sci.level() != r.expectedSCI() {
		t.Error("SCI out of step with the registers")
	}
}

func TestNilDependencies(t *testing.T) {
	p := NewPM(nil, nil, nil, nil)
	p.Write(PM1EnOffset, []byte{0xFF, 0xFF})
	p.PressPowerButton()
	p.Write(PM1CntOffset, []byte{0, 0x20})          // S5 with no PowerEvents
	p.Write(PM1CntOffset, []byte{0, 0x24})          // S3 with no hook
	p.Write(ResetOffset, []byte{layout.ResetValue}) // reset with no PowerEvents
}

// TestConcurrentAccess runs guest accesses and API calls together under
// -race, as vCPU threads and the API thread do.
func TestConcurrentAccess(t *testing.T) {
	r := newRig(t)
	r.SetOnSuspend(func() { r.Wake(WakeOther) })
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				switch (g + i) % 6 {
				case 0:
					r.write(PM1EnOffset, 2, uint64(i))
				case 1:
					r.read(PM1StsOffset, 4)
				case 2:
					r.PressPowerButton()
				case 3:
					r.write(PM1CntOffset, 2, SlpTypS3<<10|PM1CntSlpEn)
				case 4:
					r.write(PM1StsOffset, 2, 0xFFFF)
				case 5:
					r.clock.set(time.Duration(i) * time.Millisecond)
					r.read(PMTmrOffset, 4)
				}
			}
		}()
	}
	wg.Wait()
	if r.sci.level() != r.expectedSCI() {
		t.Error("SCI out of step with the registers after concurrent access")
	}
}

// FuzzPMAccess drives random sequences of guest accesses and API calls:
// nothing may panic, the SCI must always match the registers, SCI_EN always
// reads 1 and SLP_EN always reads 0.
func FuzzPMAccess(f *testing.F) {
	f.Add([]byte{1, 0, 2, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 4, 2, 0x00, 0x24, 0, 0, 0, 0, 0, 0, 1, 0x10, 1, 6, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0x13, 8, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0xFF, 4, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newRig(t)
		r.SetOnSuspend(func() {})
		const opLen = 11 // kind, offset, width, 8 value bytes
		for len(ops) >= opLen {
			op := ops[:opLen]
			ops = ops[opLen:]
			off := uint64(op[1])
			if op[1] >= 0xF0 {
				off = math.MaxUint64 - uint64(op[1]&0x0F) // near the top of the address space
			}
			width := int(op[2] % 9)
			switch op[0] % 5 {
			case 0:
				r.Read(off, make([]byte, width))
			case 1:
				r.Write(off, slices.Clone(op[3:3+width]))
			case 2:
				r.PressPowerButton()
			case 3:
				r.Wake(WakeReason(op[3] % 3))
			case 4:
				r.clock.set(time.Duration(binary.LittleEndian.Uint64(op[3:]) >> 1))
			}
			if got, want := r.sci.level(), r.expectedSCI(); got != want {
				t.Fatalf("after op % X: SCI %v, registers call for %v", op, got, want)
			}
			if cnt := r.read(PM1CntOffset, 2); cnt&PM1CntSCIEn == 0 || cnt&PM1CntSlpEn != 0 {
				t.Fatalf("after op % X: PM1_CNT reads %#x", op, cnt)
			}
		}
	})
}
