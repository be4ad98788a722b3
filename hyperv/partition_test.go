package hyperv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kvmm/kvmm/memory"
)

const (
	testTSCHz = 2_500_000_000
	testRAM   = 4 << 20 // guest RAM of the tests: 4 MiB
	testPage  = 0x200000
	beyondRAM = 0x10_0000_0000 // 64 GiB
)

// fakeTSC is a settable guest TSC shared by every vCPU.
type fakeTSC struct {
	v    atomic.Uint64
	fail atomic.Bool
}

func (f *fakeTSC) read(int) (uint64, error) {
	if f.fail.Load() {
		return 0, errors.New("KVM_GET_MSRS failed")
	}
	return f.v.Load(), nil
}

type testPartition struct {
	*Partition
	mem     *memory.Guest
	tsc     *fakeTSC
	crashes []CrashReport
	mu      sync.Mutex
}

func newTestPartition(t *testing.T, f Features, b Backend, vps int) *testPartition {
	t.Helper()
	mem, err := memory.New(testRAM, memory.Options{})
	if err != nil {
		t.Fatalf("memory.New: %v", err)
	}
	t.Cleanup(func() { mem.Close() })
	tp := &testPartition{mem: mem, tsc: &fakeTSC{}}
	tp.tsc.v.Store(1_000_000)
	p, err := NewPartition(Config{Features: f, Backend: b, VPs: vps, TSCHz: testTSCHz, GuestTSC: tp.tsc.read, Memory: mem,
		OnCrash: func(r CrashReport) {
			tp.mu.Lock()
			defer tp.mu.Unlock()
			tp.crashes = append(tp.crashes, r)
		}})
	if err != nil {
		t.Fatalf("NewPartition: %v", err)
	}
	tp.Partition = p
	return tp
}

type msrOp struct {
	vp    int
	write bool
	index uint32
	value uint64 // written, or expected on a read
	ok    bool   // false: #GP
}

func run(t *testing.T, p *testPartition, ops []msrOp) {
	t.Helper()
	for i, op := range ops {
		if op.write {
			if ok := p.WriteMSR(op.vp, op.index, op.value); ok != op.ok {
				t.Errorf("op %d: wrmsr(vp %d, %#x, %#x) ok=%v, want %v", i, op.vp, op.index, op.value, ok, op.ok)
			}
			continue
		}
		v, ok := p.ReadMSR(op.vp, op.index)
		if ok != op.ok || (ok && v != op.value) {
			t.Errorf("op %d: rdmsr(vp %d, %#x) = %#x ok=%v, want %#x ok=%v", i, op.vp, op.index, v, ok, op.value, op.ok)
		}
	}
}

func rd(index uint32, want uint64) msrOp        { return msrOp{index: index, value: want, ok: true} }
func wr(index uint32, v uint64) msrOp           { return msrOp{write: true, index: index, value: v, ok: true} }
func wrGP(index uint32, v uint64) msrOp         { return msrOp{write: true, index: index, value: v} }
func rdGP(index uint32) msrOp                   { return msrOp{index: index} }
func onVP(vp int, op msrOp) msrOp               { op.vp = vp; return op }
func rdVP(vp int, index uint32, w uint64) msrOp { return onVP(vp, rd(index, w)) }

func TestPartitionMSRs(t *testing.T) {
	const guestOSID = 0x8100_0006_0100_0000
	for _, tc := range []struct {
		name string
		f    Features
		ops  []msrOp
	}{
		{"guest OS ID", DefaultFeatures, []msrOp{
			rd(MSRGuestOSID, 0), wr(MSRGuestOSID, guestOSID), rd(MSRGuestOSID, guestOSID),
		}},
		{"hypercall page", DefaultFeatures, []msrOp{
			rd(MSRHypercall, 0),
			wr(MSRGuestOSID, guestOSID),
			wr(MSRHypercall, testPage|1), rd(MSRHypercall, testPage|1),
			wr(MSRHypercall, testPage), rd(MSRHypercall, testPage), // disable
		}},
		{"hypercall before guest OS ID is ignored, as KVM", DefaultFeatures, []msrOp{
			wr(MSRHypercall, testPage|1), rd(MSRHypercall, 0),
		}},
		{"hypercall refusals", DefaultFeatures, []msrOp{
			wr(MSRGuestOSID, guestOSID),
			wrGP(MSRHypercall, beyondRAM|1),      // page beyond RAM
			wrGP(MSRHypercall, testRAM|1),        // the page just past the end of RAM
			wrGP(MSRHypercall, testPage|1|0x100), // reserved bit 8
			wrGP(MSRHypercall, testPage|1|0x4),   // reserved bit 2
			rd(MSRHypercall, 0),
			wr(MSRHypercall, beyondRAM), // disabled: the address is not used
		}},
		{"hypercall lock", DefaultFeatures, []msrOp{
			wr(MSRGuestOSID, guestOSID),
			wr(MSRHypercall, testPage|3), rd(MSRHypercall, testPage|3),
			wr(MSRHypercall, 0), rd(MSRHypercall, testPage|3), // locked: ignored
		}},
		{"zero guest OS ID disables the hypercall page", DefaultFeatures, []msrOp{
			wr(MSRGuestOSID, guestOSID), wr(MSRHypercall, testPage|1),
			wr(MSRGuestOSID, 0), rd(MSRHypercall, testPage),
		}},
		{"VP index per vCPU, read-only", DefaultFeatures, []msrOp{
			rdVP(0, MSRVPIndex, 0), rdVP(1, MSRVPIndex, 1), rdVP(3, MSRVPIndex, 3),
			wrGP(MSRVPIndex, 0),
			onVP(4, rdGP(MSRVPIndex)), onVP(-1, rdGP(MSRVPIndex)), // no such vCPU
		}},
		{"frequencies", DefaultFeatures, []msrOp{
			rd(MSRTSCFrequency, testTSCHz), rd(MSRAPICFrequency, 1_000_000_000),
			wrGP(MSRTSCFrequency, 1), wrGP(MSRAPICFrequency, 1),
		}},
		{"time is read-only", DefaultFeatures, []msrOp{
			rd(MSRTimeRefCount, 0), wrGP(MSRTimeRefCount, 5),
		}},
		{"reference TSC refusals", DefaultFeatures, []msrOp{
			wrGP(MSRReferenceTSC, testPage|1|2), // reserved bit 1
			wrGP(MSRReferenceTSC, beyondRAM|1),  // beyond RAM
			rd(MSRReferenceTSC, 0),
			wr(MSRReferenceTSC, testPage|1), rd(MSRReferenceTSC, testPage|1),
		}},
		{"VP assist page per vCPU", DefaultFeatures, []msrOp{
			onVP(1, wr(MSRVPAssistPage, testPage|1)), rdVP(1, MSRVPAssistPage, testPage|1), rdVP(0, MSRVPAssistPage, 0),
			wrGP(MSRVPAssistPage, testPage|1|0x10), wrGP(MSRVPAssistPage, beyondRAM|1),
			wr(MSRVPAssistPage, beyondRAM), // disabled: stored as is
		}},
		{"crash MSRs", DefaultFeatures, []msrOp{
			rd(MSRCrashCtl, CrashNotify|CrashNotifyMsg),
			wr(MSRCrashP0, 11), wr(MSRCrashP4, 15), rd(MSRCrashP0, 11), rd(MSRCrashP4, 15),
			wrGP(MSRCrashCtl, 1), wrGP(MSRCrashCtl, 1<<61),
			wr(MSRCrashCtl, CrashNotifyMsg), // no bit 63: no crash
			rd(MSRCrashCtl, CrashNotify|CrashNotifyMsg),
		}},
		{"TSC invariant control offered", DefaultFeatures | FeatTSCInvariant, []msrOp{
			rd(MSRTSCInvariantControl, 0), wr(MSRTSCInvariantControl, 1), rd(MSRTSCInvariantControl, 1),
			wrGP(MSRTSCInvariantControl, 2),
		}},
		{"TSC invariant control not offered: unknown", DefaultFeatures, []msrOp{
			wr(MSRTSCInvariantControl, 1), rd(MSRTSCInvariantControl, 0), wr(MSRTSCInvariantControl, 2),
		}},
		{"unknown synthetic MSRs read 0 and ignore writes", DefaultFeatures, []msrOp{
			rd(0x40000090, 0), wr(0x40000090, 0x12345), rd(0x40000090, 0), // SynIC SINT0
			rd(0x400001FF, 0), wr(0x400001FF, ^uint64(0)),
			rd(0x400000B0, 0), // stimer0 config
		}},
		{"features not offered behave as unknown", FeatVPIndex, []msrOp{
			rd(MSRTimeRefCount, 0), wr(MSRTimeRefCount, 5), rd(MSRTSCFrequency, 0),
			rd(MSRCrashCtl, 0), wr(MSRCrashCtl, CrashNotify), rd(MSRVPAssistPage, 0),
		}},
		{"MSRs outside the synthetic range get #GP", DefaultFeatures, []msrOp{
			rdGP(0x10), wrGP(0x10, 0), rdGP(0x3FFFFFFF), rdGP(0x40000200), wrGP(0x40000200, 0), rdGP(0xC0DE0000),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPartition(t, tc.f, BackendUser, 4)
			run(t, p, tc.ops)
			if strings.Contains(tc.name, "not offered") && len(p.crashes) != 0 {
				t.Errorf("crash reported without the crash enlightenment: %+v", p.crashes)
			}
		})
	}
}

func TestPartitionHypercallPageContents(t *testing.T) {
	p := newTestPartition(t, DefaultFeatures, BackendUser, 1)
	if err := p.mem.Write(testPage, bytes.Repeat([]byte{0xCC}, 4096)); err != nil {
		t.Fatal(err)
	}
	run(t, p, []msrOp{wr(MSRGuestOSID, 1), wr(MSRHypercall, testPage|1)})
	got := make([]byte, 8)
	if err := p.mem.Read(testPage, got); err != nil {
		t.Fatal(err)
	}
	// mov eax, 2 (HV_STATUS_INVALID_HYPERCALL_CODE); ret. Not vmcall:
	// that would reach KVM's own hypercall ABI.
	want := []byte{0xB8, 0x02, 0x00, 0x00, 0x00, 0xC3, 0xCC, 0xCC}
	if !bytes.Equal(got, want) {
		t.Errorf("hypercall page % x, want % x", got, want)
	}
}

// TestPartitionTSCPage: the page is filled before the WRMSR returns, agrees
// with TIME_REF_COUNT, and its sequence is bumped on every update.
func TestPartitionTSCPage(t *testing.T) {
	p := newTestPartition(t, DefaultFeatures, BackendUser, 2)
	p.tsc.v.Store(1_000_000 + 5*testTSCHz) // 5 s after creation
	run(t, p, []msrOp{wr(MSRReferenceTSC, testPage|1)})
	page := func() (uint32, uint64, int64) {
		b := make([]byte, 24)
		if err := p.mem.Read(testPage, b); err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint64(b[8:]), int64(binary.LittleEndian.Uint64(b[16:]))
	}
	seq, scale, offset := page()
	if seq == 0 {
		t.Fatal("sequence 0 after enabling the page")
	}
	wantScale, _ := TSCScale(testTSCHz)
	if scale != wantScale {
		t.Errorf("scale %#x, want %#x", scale, wantScale)
	}
	tsc := p.tsc.v.Load()
	pageTime := mulHi64(tsc, scale) + uint64(offset)
	msr, _ := p.ReadMSR(1, MSRTimeRefCount)
	if pageTime != msr || msr != 5*RefTimeHz {
		t.Errorf("page time %d, TIME_REF_COUNT %d, want both %d", pageTime, msr, 5*RefTimeHz)
	}
	run(t, p, []msrOp{wr(MSRReferenceTSC, testPage|1)})
	if seq2, _, _ := page(); seq2 == seq || seq2 == 0 {
		t.Errorf("sequence %d after re-enabling, was %d", seq2, seq)
	}
	// Disabling leaves the page alone.
	run(t, p, []msrOp{wr(MSRReferenceTSC, testPage)})
	if seq3, _, _ := page(); seq3 == 0 {
		t.Error("disabling invalidated the page")
	}
}

// TestPartitionPauseResume: the page is rewritten on resume so that it
// keeps agreeing with TIME_REF_COUNT, which excludes the pause.
func TestPartitionPauseResume(t *testing.T) {
	p := newTestPartition(t, DefaultFeatures, BackendUser, 1)
	start := p.tsc.v.Load()
	run(t, p, []msrOp{wr(MSRReferenceTSC, testPage|1)})
	b := make([]byte, 24)
	_ = p.mem.Read(testPage, b)
	seq := binary.LittleEndian.Uint32(b)
	p.Pause(start + 2*testTSCHz)                           // pause at 2 s
	if err := p.Resume(start + 62*testTSCHz); err != nil { // paused 60 s
		t.Fatal(err)
	}
	p.tsc.v.Store(start + 63*testTSCHz)
	msr, _ := p.ReadMSR(0, MSRTimeRefCount)
	if msr != 3*RefTimeHz {
		t.Errorf("TIME_REF_COUNT %d after 3 s running and 60 s paused, want %d", msr, 3*RefTimeHz)
	}
	_ = p.mem.Read(testPage, b)
	seq2, scale, offset := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:])
	if seq2 == seq || seq2 == 0 {
		t.Errorf("sequence %d after resume, was %d", seq2, seq)
	}
	if pt := mulHi64(p.tsc.v.Load(), scale) + offset; pt != msr {
		t.Errorf("page time %d after resume, TIME_REF_COUNT %d", pt, msr)
	}
}

// TestPartitionTimeTSCFailure: a host-side TSC read failure keeps the time
// where it was instead of faulting the guest.
func TestPartitionTimeTSCFailure(t *testing.T) {
	p := newTestPartition(t, DefaultFeatures, BackendUser, 1)
	p.tsc.v.Add(testTSCHz)
	run(t, p, []msrOp{rd(MSRTimeRefCount, RefTimeHz)})
	p.tsc.fail.Store(true)
	run(t, p, []msrOp{rd(MSRTimeRefCount, RefTimeHz)})
}

func TestPartitionCrash(t *testing.T) {
	msg := "Kernel panic - not syncing: test\n\x1b[31mred\x07\x00\x00"
	for _, tc := range []struct {
		name      string
		ctl       uint64
		p3, p4    uint64
		want      string // in the report's String
		truncated bool
		msgErr    bool
	}{
		{"registers", CrashNotify, 0xa5a5, 0x7000, "P3=0xa5a5 P4=0x7000", false, false},
		{"message", CrashNotify | CrashNotifyMsg, testPage, uint64(len(msg)), `message: "Kernel panic - not syncing: test\n.[31mred."`, false, false},
		{"long message", CrashNotify | CrashNotifyMsg, testPage, 1 << 20, "[truncated]", true, false},
		{"message beyond RAM", CrashNotify | CrashNotifyMsg, beyondRAM, 100, "message unreadable", false, true},
		{"message straddling the end of RAM", CrashNotify | CrashNotifyMsg, testRAM - 10, 100, "message unreadable", false, true},
		{"empty message", CrashNotify | CrashNotifyMsg, testPage, 0, `message: ""`, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPartition(t, DefaultFeatures, BackendUser, 2)
			if err := p.mem.Write(testPage, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			run(t, p, []msrOp{
				onVP(1, wr(MSRCrashP0, 1)), onVP(1, wr(MSRCrashP0+1, 0x8100_0006_0100_0000)), onVP(1, wr(MSRCrashP0+2, 0xffffffff81000000)),
				onVP(1, wr(MSRCrashP0+3, tc.p3)), onVP(1, wr(MSRCrashP4, tc.p4)),
				onVP(1, wr(MSRCrashCtl, tc.ctl)),
				wr(MSRCrashCtl, tc.ctl), // a second report is ignored
			})
			if len(p.crashes) != 1 {
				t.Fatalf("%d crash reports, want 1", len(p.crashes))
			}
			r := p.crashes[0]
			if r.VP != 1 || r.P[0] != 1 || r.P[1] != 0x8100_0006_0100_0000 || r.P[3] != tc.p3 || r.P[4] != tc.p4 || r.Ctl != tc.ctl {
				t.Errorf("report %+v", r)
			}
			if r.Truncated != tc.truncated || (r.MessageError != "") != tc.msgErr {
				t.Errorf("truncated %v message error %q", r.Truncated, r.MessageError)
			}
			if len(r.Message) > MaxCrashMessage {
				t.Errorf("message of %d bytes", len(r.Message))
			}
			if s := r.String(); !strings.Contains(s, tc.want) {
				t.Errorf("report %q lacks %q", s, tc.want)
			}
			if p.Stats().Crashes != 1 {
				t.Errorf("stats %+v", p.Stats())
			}
		})
	}
}

// TestPartitionKernelBackend: with the in-kernel backend only the crash
// MSRs come to kvmm; anything else arriving gets #GP.
func TestPartitionKernelBackend(t *testing.T) {
	p := newTestPartition(t, DefaultFeatures, BackendKernel, 1)
	run(t, p, []msrOp{
		rd(MSRCrashCtl, CrashNotify|CrashNotifyMsg), wr(MSRCrashP0, 3), rd(MSRCrashP0, 3),
		rdGP(MSRGuestOSID), wrGP(MSRHypercall, testPage|1), rdGP(MSRTimeRefCount), rdGP(0x40000090),
		wr(MSRCrashCtl, CrashNotify),
	})
	if len(p.crashes) != 1 || p.crashes[0].P[0] != 3 {
		t.Errorf("crashes %+v", p.crashes)
	}
}

func TestNewPartitionRefusals(t *testing.T) {
	mem, err := memory.New(testRAM, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	tsc := func(int) (uint64, error) { return 0, nil }
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no vCPUs", Config{Features: DefaultFeatures, Backend: BackendUser, TSCHz: testTSCHz, GuestTSC: tsc, Memory: mem}},
		{"no memory", Config{Features: DefaultFeatures, Backend: BackendUser, VPs: 1, TSCHz: testTSCHz, GuestTSC: tsc}},
		{"unresolved backend", Config{Features: DefaultFeatures, Backend: BackendAuto, VPs: 1, TSCHz: testTSCHz, GuestTSC: tsc, Memory: mem}},
		{"slow TSC", Config{Features: DefaultFeatures, Backend: BackendUser, VPs: 1, TSCHz: RefTimeHz, GuestTSC: tsc, Memory: mem}},
		{"no TSC reader", Config{Features: DefaultFeatures, Backend: BackendUser, VPs: 1, TSCHz: testTSCHz, Memory: mem}},
		{"TSC unreadable", Config{Features: DefaultFeatures, Backend: BackendUser, VPs: 1, TSCHz: testTSCHz, Memory: mem,
			GuestTSC: func(int) (uint64, error) { return 0, errors.New("no") }}},
	} {
		if _, err := NewPartition(tc.cfg); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// TestPartitionConcurrent exercises every vCPU at once (run with -race):
// TIME_REF_COUNT stays monotonic per vCPU and the page stays valid.
func TestPartitionConcurrent(t *testing.T) {
	const vps = 8
	p := newTestPartition(t, DefaultFeatures, BackendUser, vps)
	run(t, p, []msrOp{wr(MSRGuestOSID, 1), wr(MSRReferenceTSC, testPage|1)})
	var wg sync.WaitGroup
	for vp := 0; vp < vps; vp++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev := uint64(0)
			for i := 0; i < 500; i++ {
				p.tsc.v.Add(1000)
				v, ok := p.ReadMSR(vp, MSRTimeRefCount)
				if !ok || v < prev {
					t.Errorf("vp %d: TIME_REF_COUNT %d after %d (ok %v)", vp, v, prev, ok)
					return
				}
				prev = v
				if !p.WriteMSR(vp, MSRVPAssistPage, testPage|1) || !p.WriteMSR(vp, MSRHypercall, testPage+0x1000|1) {
					t.Errorf("vp %d: write refused", vp)
					return
				}
				if i%50 == 0 && !p.WriteMSR(vp, MSRReferenceTSC, testPage|1) {
					t.Errorf("vp %d: REFERENCE_TSC refused", vp)
					return
				}
			}
		}()
	}
	wg.Wait()
	seq, _ := p.mem.ReadU32(testPage)
	if seq == 0 {
		t.Error("TSC page invalid after concurrent updates")
	}
}

func TestPrintable(t *testing.T) {
	got := printable([]byte("ok\ttab\nline\r\x1b[2J\xff\x00\x00"))
	if want := "ok\ttab\nline..[2J."; got != want {
		t.Errorf("printable = %q, want %q", got, want)
	}
}
