package hyperv

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Synthetic MSRs (Hyper-V TLFS; Linux arch/x86/include/asm/hyperv-tlfs.h).
const (
	MSRGuestOSID           = 0x40000000
	MSRHypercall           = 0x40000001
	MSRVPIndex             = 0x40000002
	MSRTimeRefCount        = 0x40000020
	MSRReferenceTSC        = 0x40000021
	MSRTSCFrequency        = 0x40000022
	MSRAPICFrequency       = 0x40000023
	MSRVPAssistPage        = 0x40000073
	MSRCrashP0             = 0x40000100
	MSRCrashP4             = 0x40000104
	MSRCrashCtl            = 0x40000105
	MSRTSCInvariantControl = 0x40000118

	// SyntheticMSRBase and SyntheticMSRCount bound the range kvmm owns in
	// the user-space backend: every MSR in it is answered here (unknown
	// ones read 0 and ignore writes), none of it by KVM.
	SyntheticMSRBase  = 0x40000000
	SyntheticMSRCount = 0x200
)

// Bits of the page MSRs (HYPERCALL, REFERENCE_TSC, VP_ASSIST_PAGE).
const (
	pageEnable     = 1 << 0
	hypercallLock  = 1 << 1 // HYPERCALL: immutable until reset once set
	pageGPAMask    = ^uint64(0xFFF)
	hypercallRsvd  = uint64(0xFFC) // HYPERCALL bits 11:2
	pageRsvd       = uint64(0xFFE) // REFERENCE_TSC, VP_ASSIST_PAGE bits 11:1
	tscInvariantOn = 1 << 0        // TSC_INVARIANT_CONTROL: HV_EXPOSE_INVARIANT_TSC
	pageSize       = 4096
)

// APICHz is the APIC timer input frequency KVM's emulated local APIC uses
// (KVM_APIC_BUS_FREQUENCY, 1 GHz), what APIC_FREQUENCY reports.
const APICHz = 1_000_000_000

// HypercallStub is what the hypercall page holds: "mov eax, 2; ret", the
// status HV_STATUS_INVALID_HYPERCALL_CODE for every call. Real Hyper-V and
// KVM's in-kernel Hyper-V write "vmcall; ret", but without the in-kernel
// implementation KVM takes a guest's VMCALL as a KVM hypercall: RAX would
// be read as a KVM hypercall number (Linux leaves the Hyper-V control word
// in RCX and garbage in RAX), giving -KVM_ENOSYS at best and a random valid
// KVM hypercall at worst, and it never reaches user space. A stub that
// fails cleanly is safe: with no hints and no VMBus, Linux 6.1 issues no
// hypercall at all (guest-protocols.md §2.4).
var HypercallStub = []byte{0xB8, 0x02, 0x00, 0x00, 0x00, 0xC3}

// Memory is the guest RAM the partition writes its pages to and reads the
// crash message from; memory.Guest implements it with bounds checks.
type Memory interface {
	Read(gpa uint64, b []byte) error
	Write(gpa uint64, b []byte) error
	Contains(gpa, n uint64) bool
}

// Config describes a partition.
type Config struct {
	// Features are the enlightenments offered in CPUID.
	Features Features
	// Backend is the resolved backend (kernel or user). With the kernel
	// backend only the crash MSRs are served here (KVM serves the rest);
	// every other access answers #GP.
	Backend Backend
	// VPs is the number of vCPUs; VP indexes are 0..VPs-1 (vCPU IDs).
	VPs int
	// TSCHz is the guest TSC frequency (KVM_GET_TSC_KHZ * 1000). Needed
	// for time and frequencies in the user backend.
	TSCHz uint64
	// GuestTSC reads vCPU vp's TSC as the guest sees it. It is called on
	// that vCPU's thread during its MSR exit, and at creation for vCPU 0.
	GuestTSC func(vp int) (uint64, error)
	// Memory is guest RAM.
	Memory Memory
	// OnCrash is called, once, on the vCPU thread that wrote CRASH_CTL
	// with CrashNotify. Optional.
	OnCrash func(CrashReport)
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Partition is the user-space Hyper-V partition: the synthetic MSRs'
// state, the reference clock and the guest pages they own. Its methods are
// safe for concurrent use by every vCPU thread.
type Partition struct {
	cfg   Config
	log   *slog.Logger
	clock *RefClock // nil without FeatTime

	mu           sync.Mutex
	guestOSID    uint64
	hypercall    uint64
	refTSC       uint64
	tscSeq       uint32
	crashP       [5]uint64
	crashed      bool
	tscInvariant uint64
	vpAssist     []uint64

	stats counters
}

// NewPartition validates cfg and starts the reference clock at 0.
func NewPartition(cfg Config) (*Partition, error) {
	if cfg.VPs < 1 {
		return nil, fmt.Errorf("hyperv partition: %d vCPUs", cfg.VPs)
	}
	if cfg.Memory == nil {
		return nil, errors.New("hyperv partition: no guest memory")
	}
	if cfg.Backend != BackendUser && cfg.Backend != BackendKernel {
		return nil, fmt.Errorf("hyperv partition: backend %q is not resolved", cfg.Backend)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Partition{cfg: cfg, log: log, vpAssist: make([]uint64, cfg.VPs)}
	if cfg.Backend == BackendKernel {
		return p, nil
	}
	if cfg.Features.Has(FeatFrequencies) || cfg.Features.Has(FeatTime) {
		if _, err := TSCScale(cfg.TSCHz); err != nil {
			return nil, fmt.Errorf("hyperv partition: %w", err)
		}
	}
	if cfg.Features.Has(FeatTime) {
		if cfg.GuestTSC == nil {
			return nil, errors.New("hyperv partition: time needs a guest TSC reader")
		}
		tsc, err := cfg.GuestTSC(0)
		if err != nil {
			return nil, fmt.Errorf("hyperv partition: reading the guest TSC: %w", err)
		}
		if p.clock, err = NewRefClock(cfg.TSCHz, tsc); err != nil {
			return nil, fmt.Errorf("hyperv partition: %w", err)
		}
	}
	return p, nil
}

// Clock is the reference clock, nil without the time enlightenment.
func (p *Partition) Clock() *RefClock { return p.clock }

// InRange reports whether index is one of the synthetic MSRs.
func InRange(index uint32) bool {
	return index >= SyntheticMSRBase && index < SyntheticMSRBase+SyntheticMSRCount
}

func isCrashMSR(index uint32) bool { return index >= MSRCrashP0 && index <= MSRCrashCtl }

// serves reports whether this partition answers index: in the kernel
// backend only the crash MSRs, else the whole synthetic range.
func (p *Partition) serves(index uint32) bool {
	if p.cfg.Backend == BackendKernel {
		return p.cfg.Features.Has(FeatCrash) && isCrashMSR(index)
	}
	return InRange(index)
}

// offered reports whether index belongs to an enlightenment CPUID offers;
// the others in the range behave as unknown (read 0, writes ignored).
func (p *Partition) offered(index uint32) bool {
	f := p.cfg.Features
	switch {
	case index == MSRGuestOSID || index == MSRHypercall:
		return true
	case index == MSRVPIndex:
		return f.Has(FeatVPIndex)
	case index == MSRTimeRefCount || index == MSRReferenceTSC:
		return f.Has(FeatTime)
	case index == MSRTSCFrequency || index == MSRAPICFrequency:
		return f.Has(FeatFrequencies)
	case index == MSRVPAssistPage:
		return f.Has(FeatVPAssist)
	case isCrashMSR(index):
		return f.Has(FeatCrash)
	case index == MSRTSCInvariantControl:
		return f.Has(FeatTSCInvariant)
	}
	return false
}

// ReadMSR answers an RDMSR of vCPU vp; ok=false injects #GP.
func (p *Partition) ReadMSR(vp int, index uint32) (value uint64, ok bool) {
	p.stats.reads.Add(1)
	if vp < 0 || vp >= p.cfg.VPs || !p.serves(index) {
		p.stats.faults.Add(1)
		return 0, false
	}
	if !p.offered(index) {
		p.stats.unknown.Add(1)
		p.log.Debug("read of an unknown synthetic MSR", "vcpu", vp, "msr", hex(uint64(index)))
		return 0, true
	}
	switch index {
	case MSRVPIndex:
		return uint64(vp), true
	case MSRTimeRefCount:
		return p.refTime(vp), true
	case MSRTSCFrequency:
		return p.cfg.TSCHz, true
	case MSRAPICFrequency:
		return APICHz, true
	case MSRCrashCtl:
		// The host's offer, whatever the guest wrote.
		return CrashNotify | CrashNotifyMsg, true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case index == MSRGuestOSID:
		return p.guestOSID, true
	case index == MSRHypercall:
		return p.hypercall, true
	case index == MSRReferenceTSC:
		return p.refTSC, true
	case index == MSRVPAssistPage:
		return p.vpAssist[vp], true
	case index == MSRTSCInvariantControl:
		return p.tscInvariant, true
	case index >= MSRCrashP0 && index <= MSRCrashP4:
		return p.crashP[index-MSRCrashP0], true
	}
	return 0, true
}

// refTime is TIME_REF_COUNT as seen by vCPU vp.
func (p *Partition) refTime(vp int) uint64 {
	tsc, err := p.cfg.GuestTSC(vp)
	if err != nil {
		// A host-side failure must not become a guest #GP (Linux reads
		// this MSR with a plain rdmsr): keep time where it was.
		p.log.Warn("reading the guest TSC for TIME_REF_COUNT", "vcpu", vp, "err", err)
		return p.clock.Last()
	}
	return p.clock.Read(tsc)
}

// WriteMSR answers a WRMSR of vCPU vp; false injects #GP (reserved bits,
// read-only MSRs, pages outside RAM).
func (p *Partition) WriteMSR(vp int, index uint32, value uint64) (ok bool) {
	p.stats.writes.Add(1)
	ok = p.write(vp, index, value)
	if !ok {
		p.stats.faults.Add(1)
		p.log.Debug("#GP for a synthetic MSR write", "vcpu", vp, "msr", hex(uint64(index)), "value", hex(value))
	}
	return ok
}

func (p *Partition) write(vp int, index uint32, value uint64) bool {
	if vp < 0 || vp >= p.cfg.VPs || !p.serves(index) {
		return false
	}
	if !p.offered(index) {
		p.stats.unknown.Add(1)
		p.log.Debug("write to an unknown synthetic MSR ignored", "vcpu", vp, "msr", hex(uint64(index)), "value", hex(value))
		return true
	}
	switch index {
	case MSRVPIndex, MSRTimeRefCount, MSRTSCFrequency, MSRAPICFrequency:
		return false // read-only
	case MSRCrashCtl:
		return p.writeCrashCtl(vp, value)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case index == MSRGuestOSID:
		p.guestOSID = value
		if value == 0 {
			// As KVM: a zero guest OS ID disables the hypercall page.
			p.hypercall &^= pageEnable
		}
		return true
	case index == MSRHypercall:
		return p.writeHypercall(value)
	case index == MSRReferenceTSC:
		return p.writeRefTSC(value)
	case index == MSRVPAssistPage:
		if value&pageRsvd != 0 || (value&pageEnable != 0 && !p.cfg.Memory.Contains(value&pageGPAMask, pageSize)) {
			return false
		}
		p.vpAssist[vp] = value
		return true
	case index == MSRTSCInvariantControl:
		if value&^tscInvariantOn != 0 {
			return false
		}
		p.tscInvariant = value
		return true
	case index >= MSRCrashP0 && index <= MSRCrashP4:
		p.crashP[index-MSRCrashP0] = value
		return true
	}
	return true
}

// writeHypercall: bit 0 enables the page at bits 63:12, which is filled
// before the WRMSR completes; bit 1 locks the MSR. Caller holds p.mu.
func (p *Partition) writeHypercall(value uint64) bool {
	if value&hypercallRsvd != 0 {
		return false
	}
	if p.hypercall&hypercallLock != 0 {
		return true // locked: immutable until reset (TLFS), writes ignored
	}
	if value&pageEnable != 0 {
		if p.guestOSID == 0 {
			// As KVM: the page stays disabled until the guest has
			// identified itself through GUEST_OS_ID.
			p.log.Debug("hypercall page enabled before GUEST_OS_ID: ignored", "value", hex(value))
			return true
		}
		gpa := value & pageGPAMask
		if !p.cfg.Memory.Contains(gpa, pageSize) || p.cfg.Memory.Write(gpa, HypercallStub) != nil {
			return false
		}
	}
	p.hypercall = value
	return true
}

// writeRefTSC: bit 0 enables the reference TSC page at bits 63:12, filled
// before the WRMSR completes. Caller holds p.mu.
func (p *Partition) writeRefTSC(value uint64) bool {
	if value&pageRsvd != 0 {
		return false
	}
	if value&pageEnable != 0 {
		gpa := value & pageGPAMask
		if !p.cfg.Memory.Contains(gpa, pageSize) {
			return false
		}
		if err := p.fillTSCPage(gpa); err != nil {
			p.log.Warn("writing the reference TSC page", "gpa", hex(gpa), "err", err)
			return false
		}
	}
	p.refTSC = value
	return true
}

// fillTSCPage writes the page with the next sequence: the sequence is
// zeroed first, so that a vCPU reading the page meanwhile falls back to
// the MSR rather than mixing old and new fields. Caller holds p.mu.
func (p *Partition) fillTSCPage(gpa uint64) error {
	p.tscSeq = NextSequence(p.tscSeq)
	var b [24]byte
	EncodeTSCPage(b[:], p.tscSeq, p.clock.Scale(), p.clock.Offset())
	if err := p.cfg.Memory.Write(gpa+TSCPageSequence, make([]byte, 4)); err != nil {
		return err
	}
	if err := p.cfg.Memory.Write(gpa+TSCPageScale, b[TSCPageScale:]); err != nil {
		return err
	}
	return p.cfg.Memory.Write(gpa+TSCPageSequence, b[:4])
}

// writeCrashCtl: bit 63 reports a crash with P0-P4 (bit 62: P3/P4 are a
// message page); other bits are reserved.
func (p *Partition) writeCrashCtl(vp int, value uint64) bool {
	if value&^uint64(CrashNotify|CrashNotifyMsg) != 0 {
		return false
	}
	if value&CrashNotify == 0 {
		return true
	}
	p.mu.Lock()
	if p.crashed {
		p.mu.Unlock()
		p.log.Warn("further guest crash report ignored", "vcpu", vp)
		return true
	}
	p.crashed = true
	r := CrashReport{VP: vp, P: p.crashP, Ctl: value}
	p.mu.Unlock()
	if value&CrashNotifyMsg != 0 {
		p.readCrashMessage(&r)
	}
	p.stats.crashes.Add(1)
	if p.cfg.OnCrash != nil {
		p.cfg.OnCrash(r)
	}
	return true
}

// readCrashMessage reads P4 bytes (at most MaxCrashMessage) at GPA P3.
func (p *Partition) readCrashMessage(r *CrashReport) {
	n := r.P[4]
	if n > MaxCrashMessage {
		n, r.Truncated = MaxCrashMessage, true
	}
	if n == 0 {
		return
	}
	buf := make([]byte, n)
	if err := p.cfg.Memory.Read(r.P[3], buf); err != nil {
		r.MessageError = fmt.Sprintf("%d bytes at GPA %#x: %v", n, r.P[3], err)
		return
	}
	r.Message = printable(buf)
}

// Pause stops the reference time; tsc is the guest TSC now (any vCPU). The
// VM calls it once every vCPU is parked.
func (p *Partition) Pause(tsc uint64) {
	if p.clock != nil {
		p.clock.Pause(tsc)
	}
}

// Resume restarts the reference time where Pause left it and rewrites an
// enabled TSC page with the new offset and the next sequence. The VM calls
// it before any vCPU runs again.
func (p *Partition) Resume(tsc uint64) error {
	if p.clock == nil || !p.clock.Resume(tsc) {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refTSC&pageEnable == 0 {
		return nil
	}
	if err := p.fillTSCPage(p.refTSC & pageGPAMask); err != nil {
		return fmt.Errorf("rewriting the reference TSC page on resume: %w", err)
	}
	return nil
}

func hex(v uint64) string { return fmt.Sprintf("%#x", v) }
