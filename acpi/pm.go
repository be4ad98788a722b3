package acpi

import (
	"encoding/binary"
	"log/slog"
	"sync"
	"time"

	"github.com/kvmm/kvmm/devices"
	"github.com/kvmm/kvmm/layout"
)

// Register offsets inside the PM block at layout.PMBase, derived from the
// addresses the FADT advertises so the two cannot drift apart.
const (
	PM1StsOffset  = layout.PM1aEvtBlk - layout.PMBase // PM1a_STS, 16 bits, write-one-to-clear
	PM1EnOffset   = PM1StsOffset + 2                  // PM1a_EN, 16 bits
	PM1CntOffset  = layout.PM1aCntBlk - layout.PMBase // PM1a_CNT, 16 bits
	PMTmrOffset   = layout.PMTmrBlk - layout.PMBase   // PM_TMR, 32 bits, read-only
	GPE0StsOffset = layout.GPE0Blk - layout.PMBase    // GPE0_STS, 16 bits, write-one-to-clear
	GPE0EnOffset  = GPE0StsOffset + layout.GPE0BlkLen/2
	ResetOffset   = layout.ResetReg - layout.PMBase // reset register, 8 bits
	// PMBlockSize is the I/O range to map the PM device at layout.PMBase.
	PMBlockSize = ResetOffset + 4
)

// PM1_STS bits (ACPI 6.5 Table 4.16).
const (
	PM1StsTmr        = 1 << 0
	PM1StsBM         = 1 << 4
	PM1StsGbl        = 1 << 5
	PM1StsPwrBtn     = 1 << 8
	PM1StsSlpBtn     = 1 << 9
	PM1StsRTC        = 1 << 10
	PM1StsPCIExpWake = 1 << 14
	PM1StsWak        = 1 << 15

	pm1StsAll = PM1StsTmr | PM1StsBM | PM1StsGbl | PM1StsPwrBtn | PM1StsSlpBtn |
		PM1StsRTC | PM1StsPCIExpWake | PM1StsWak
)

// PM1_EN bits (ACPI 6.5 Table 4.17).
const (
	PM1EnTmr           = 1 << 0
	PM1EnGbl           = 1 << 5
	PM1EnPwrBtn        = 1 << 8
	PM1EnSlpBtn        = 1 << 9
	PM1EnRTC           = 1 << 10
	PM1EnPCIExpWakeDis = 1 << 14

	pm1EnAll = PM1EnTmr | PM1EnGbl | PM1EnPwrBtn | PM1EnSlpBtn | PM1EnRTC | PM1EnPCIExpWakeDis
)

// PM1_CNT bits (ACPI 6.5 Table 4.13).
const (
	PM1CntSCIEn       = 1 << 0
	PM1CntBMRld       = 1 << 1
	PM1CntGblRls      = 1 << 2
	PM1CntSlpTypShift = 10
	PM1CntSlpTypMask  = 7 << PM1CntSlpTypShift
	PM1CntSlpEn       = 1 << 13

	// pm1CntStored are the bits that read back what was written. SCI_EN
	// reads 1 whatever is written (SMI_CMD is 0: always in ACPI mode);
	// GBL_RLS and SLP_EN are write-only and read 0.
	pm1CntStored = PM1CntBMRld | PM1CntSlpTypMask
)

// SLP_TYP values the DSDT's \_Sx_ packages advertise and PM decodes.
const (
	SlpTypS5 = 0
	SlpTypS3 = 1
)

// pm1SCIMask are the PM1 events that raise the SCI when enabled (QEMU
// acpi_update_sci); wake and bus-master status do not.
const pm1SCIMask = PM1StsTmr | PM1StsGbl | PM1StsPwrBtn | PM1StsSlpBtn | PM1StsRTC

// PMTimerHz is the PM timer frequency fixed by the ACPI spec.
const PMTimerHz = 3579545

// WakeReason says what ended an S3 sleep; it picks the PM1_STS bit the
// guest sees next to WAK_STS.
type WakeReason int

const (
	// WakeOther (host API, keyboard) is reported as the power button, as
	// QEMU does: Linux clears PWRBTN_STS on resume and does not treat it
	// as a power-off request.
	WakeOther WakeReason = iota
	// WakeRTC is the CMOS RTC alarm.
	WakeRTC
)

func (r WakeReason) String() string {
	switch r {
	case WakeOther:
		return "other"
	case WakeRTC:
		return "rtc"
	}
	return "unknown"
}

// PM is the ACPI fixed-hardware register block: PM1a event and control,
// the PM timer, GPE0 and the reset register. vCPU threads (guest accesses)
// and the API thread (button, wake) both call it, so one mutex guards it.
//
// TMR_STS is never set: the timer's carry event is not modelled, as Linux
// never enables TMR_EN (its acpi_pm clocksource only reads PM_TMR).
type PM struct {
	sci   devices.IRQLine
	power devices.PowerEvents
	clock func() time.Duration
	log   *slog.Logger

	mu        sync.Mutex
	sts, en   uint16 // PM1_STS, PM1_EN
	cnt       uint16 // PM1_CNT stored bits (pm1CntStored)
	gpeSts    uint16
	gpeEn     uint16
	sciHigh   bool   // level last driven on the SCI
	lastTicks uint64 // keeps the timer monotonic even if clock is not
	onSuspend func()
}

var _ devices.Device = (*PM)(nil)

// NewPM returns the PM block. sci is the SCI line (layout.SCIIRQ); power
// receives S5 and reset requests; clock is a monotonic time source (nil =
// time since creation), injected so tests control the PM timer.
func NewPM(sci devices.IRQLine, power devices.PowerEvents, clock func() time.Duration, log *slog.Logger) *PM {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if clock == nil {
		start := time.Now()
		clock = func() time.Duration { return time.Since(start) }
	}
	if sci == nil {
		sci = devices.IRQLineFunc(func(bool) error { return nil })
	}
	return &PM{sci: sci, power: power, clock: clock, log: log.With("device", "acpi-pm")}
}

// SetOnSuspend installs the hook called when the guest enters S3 (nil:
// the request is logged and ignored, and the guest keeps polling WAK_STS).
// It runs on the thread of the vCPU that wrote SLP_EN, with no PM lock
// held, so it may call Wake.
func (p *PM) SetOnSuspend(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onSuspend = f
}

// PressPowerButton latches a fixed power button press; with PWRBTN_EN set
// the guest gets an SCI and shuts down.
func (p *PM) PressPowerButton() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts |= PM1StsPwrBtn
	p.updateSCI()
}

// RaiseFixedEvent latches fixed-event status bits (for example RTC_STS when
// the CMOS alarm fires); the SCI follows their enable bits.
func (p *PM) RaiseFixedEvent(sts uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts |= sts & pm1StsAll
	p.updateSCI()
}

// Wake sets WAK_STS and the reason's status bit, which ends the guest's
// wait for WAK_STS after it wrote SLP_EN. Whether the reason may wake the
// guest (its enable bit) is the caller's decision.
func (p *PM) Wake(reason WakeReason) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts |= PM1StsWak
	// The platform reset of a wake leaves SLP_TYP cleared, as QEMU's PIIX4
	// does; Linux clears it too (acpi_leave_sleep_state_prep), but firmware
	// hands over a clean register.
	p.cnt &^= PM1CntSlpTypMask
	switch reason {
	case WakeOther:
		p.sts |= PM1StsPwrBtn
	case WakeRTC:
		p.sts |= PM1StsRTC
	default:
		p.log.Warn("wake with unknown reason", "reason", int(reason))
	}
	p.updateSCI()
}

// Status returns PM1_STS.
func (p *PM) Status() uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sts
}

// Enable returns PM1_EN.
func (p *PM) Enable() uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.en
}

// Read answers a guest read of any width at any offset byte by byte, so
// a 32-bit read of PM1_STS also returns PM1_EN as the hardware does. Bytes
// outside the block read as 0xFF (nothing decodes them).
func (p *PM) Read(offset uint64, data []byte) {
	p.mu.Lock()
	regs := p.snapshot()
	p.mu.Unlock()
	for i := range data {
		data[i] = 0xFF
		if offset < PMBlockSize && offset+uint64(i) < PMBlockSize {
			data[i] = regs[offset+uint64(i)]
		}
	}
}

// snapshot renders every register as the guest reads it.
func (p *PM) snapshot() [PMBlockSize]byte {
	var r [PMBlockSize]byte
	le := binary.LittleEndian
	le.PutUint16(r[PM1StsOffset:], p.sts)
	le.PutUint16(r[PM1EnOffset:], p.en)
	le.PutUint16(r[PM1CntOffset:], p.cnt|PM1CntSCIEn)
	le.PutUint32(r[PMTmrOffset:], p.timer())
	le.PutUint16(r[GPE0StsOffset:], p.gpeSts)
	le.PutUint16(r[GPE0EnOffset:], p.gpeEn)
	return r // the reset register reads 0
}

// timer is the 32-bit PM timer (TMR_VAL_EXT is set in the FADT).
func (p *PM) timer() uint32 {
	d := max(p.clock(), 0)
	ticks := uint64(d/time.Second)*PMTimerHz + uint64(d%time.Second)*PMTimerHz/uint64(time.Second)
	p.lastTicks = max(p.lastTicks, ticks)
	return uint32(p.lastTicks)
}

// pmAction is what a register write asks of the machine; it runs after
// the lock is released so PowerEvents and hooks may call back into PM.
type pmAction int

const (
	actNone pmAction = iota
	actPowerOff
	actSuspend
	actReset
)

// Write applies a guest write of any width at any offset. The bytes are
// merged per register with a byte mask, so a partial write touches only
// the bytes it covers and a 32-bit write at PM1_STS clears status and sets
// the enables in one go, as on hardware.
func (p *PM) Write(offset uint64, data []byte) {
	if offset >= PMBlockSize {
		p.log.Debug("write outside the PM block ignored", "offset", offset, "len", len(data))
		return
	}
	var val, mask [PMBlockSize]byte
	for i, b := range data {
		if o := offset + uint64(i); o < PMBlockSize {
			val[o], mask[o] = b, 0xFF
		}
	}

	p.mu.Lock()
	act, slpTyp := p.apply(&val, &mask)
	p.updateSCI()
	onSuspend := p.onSuspend
	p.mu.Unlock()

	switch act {
	case actPowerOff:
		p.log.Info("guest entered S5: power off")
		if p.power != nil {
			p.power.PowerOff()
		}
	case actSuspend:
		if onSuspend == nil {
			p.log.Warn("guest entered S3 but suspend is not supported: ignored")
			return
		}
		p.log.Info("guest entered S3: suspend")
		onSuspend()
	case actReset:
		p.log.Info("guest wrote the ACPI reset register")
		if p.power != nil {
			p.power.Reset("acpi reset register")
		}
	case actNone:
		if slpTyp >= 0 {
			p.log.Warn("guest wrote SLP_EN with an unsupported SLP_TYP: ignored", "slp_typ", slpTyp)
		}
	}
}

// apply merges one write into the registers and returns the machine action
// it requests; slpTyp is the SLP_TYP of a SLP_EN write (-1 if none).
func (p *PM) apply(val, mask *[PMBlockSize]byte) (act pmAction, slpTyp int) {
	reg := func(off int) (v, m uint16) {
		return binary.LittleEndian.Uint16(val[off:]), binary.LittleEndian.Uint16(mask[off:])
	}
	if v, m := reg(PM1StsOffset); m != 0 {
		p.sts &^= v & m & pm1StsAll
	}
	if v, m := reg(PM1EnOffset); m != 0 {
		p.en = p.en&^(m&pm1EnAll) | v&m&pm1EnAll
	}
	if v, m := reg(GPE0StsOffset); m != 0 {
		p.gpeSts &^= v & m
	}
	if v, m := reg(GPE0EnOffset); m != 0 {
		p.gpeEn = p.gpeEn&^m | v&m
	}
	// PM_TMR is read-only: writes to it are dropped.

	slpTyp = -1
	if v, m := reg(PM1CntOffset); m != 0 {
		p.cnt = p.cnt&^(m&pm1CntStored) | v&m&pm1CntStored
		if v&m&PM1CntSlpEn != 0 {
			// SLP_EN acts on the SLP_TYP now latched, whether written in
			// this access or the one before, as ACPICA does in two steps.
			slpTyp = int(p.cnt&PM1CntSlpTypMask) >> PM1CntSlpTypShift
			switch slpTyp {
			case SlpTypS5:
				act = actPowerOff
			case SlpTypS3:
				act = actSuspend
			}
		}
	}
	if mask[ResetOffset] != 0 && val[ResetOffset] == layout.ResetValue {
		act = actReset
	}
	return act, slpTyp
}

// updateSCI drives the SCI to the level the registers call for, only on a
// change so a busy guest does not cost an ioctl per access. Called with
// p.mu held so level changes reach the line in order.
func (p *PM) updateSCI() {
	level := p.sts&p.en&pm1SCIMask != 0 || p.gpeSts&p.gpeEn != 0
	if level == p.sciHigh {
		return
	}
	if err := p.sci.SetLevel(level); err != nil {
		// Keep the old level so the next register change retries.
		p.log.Error("drive SCI", "level", level, "err", err)
		return
	}
	p.sciHigh = level
}
