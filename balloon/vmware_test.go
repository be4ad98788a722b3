package balloon

import (
	"math"
	"slices"
	"sync"
	"testing"
)

func TestVMwareNegotiation(t *testing.T) {
	mem := newFakeMemory(8 << 20)
	v := NewVMware(NewLedger(mem, VMwareCommands, quietLog()), mem, quietLog())

	// Before any START, target-carrying commands ask for a reset; the
	// doorbell cleanup and GUEST_ID never do.
	if r := call(v, CmdGetTarget, 2048, 0); r.RAX != StatusReset {
		t.Errorf("GET_TARGET before START: status %d, want %d", r.RAX, StatusReset)
	}
	if r := call(v, CmdDoorbellSet, vmciInvalidID, vmciInvalidID); r.RAX != StatusSuccess {
		t.Errorf("doorbell cleanup: status %d, want 0", r.RAX)
	}
	if r := call(v, CmdDoorbellSet, 0x1234, 0x5678); r.RAX != StatusCmdInvalid {
		t.Errorf("real doorbell: status %d, want %d", r.RAX, StatusCmdInvalid)
	}

	for _, tc := range []struct {
		name      string
		requested uint64
		granted   uint64
	}{
		{"64-bit Linux", 0x3e, HostCaps},
		{"32-bit Linux", 0x1e, CapBasic | CapBatched | CapBatched2M},
		{"2M without batching", CapBasic | CapBatched2M, CapBasic},
		{"unload", 0, 0},
		{"reserved bits", ^uint64(0), HostCaps},
	} {
		r := call(v, CmdStart, tc.requested, 0)
		if r.RAX != StatusSuccessWithCaps || r.RCX != tc.granted {
			t.Errorf("%s: START(%#x) = status %#x caps %#x, want %#x caps %#x", tc.name, tc.requested,
				r.RAX, r.RCX, StatusSuccessWithCaps, tc.granted)
		}
	}
	if r := call(v, CmdGuestID, 1, 0); r.RAX != StatusSuccess {
		t.Errorf("GUEST_ID: status %d", r.RAX)
	}
	st := v.State()
	if !st.Negotiated || st.Capabilities != HostCaps || st.GuestID != 1 || st.Starts != 5 || st.Resets != 1 {
		t.Errorf("state %+v", st)
	}

	// Capabilities are enforced: after START(BASIC) batches are refused.
	call(v, CmdStart, CapBasic, 0)
	writeBatch(t, mem, 0x10000)
	if r := call(v, CmdBatchedLock, batchGPA>>12, 1); r.RAX != StatusCmdInvalid {
		t.Errorf("BATCHED_LOCK without the capability: status %d", r.RAX)
	}
	if r := call(v, CmdLock, 0x10, 1); r.RAX != StatusSuccess {
		t.Errorf("LOCK with BASIC: status %d", r.RAX)
	}
	call(v, CmdStart, CapBatched, 0)
	if r := call(v, CmdLock, 0x11, 1); r.RAX != StatusCmdInvalid {
		t.Errorf("LOCK without BASIC: status %d", r.RAX)
	}
	if r := call(v, CmdBatched2MLock, batchGPA>>12, 1); r.RAX != StatusCmdInvalid {
		t.Errorf("BATCHED_2M_LOCK without the capability: status %d", r.RAX)
	}
	for _, cmd := range []uint64{5, 11, 0x100000001, math.MaxUint64} {
		if r := call(v, cmd, 0, 0); r.RAX != StatusCmdInvalid {
			t.Errorf("command %#x: status %d, want %d", cmd, r.RAX, StatusCmdInvalid)
		}
	}
	r := Regs{RAX: 0x12345678, RBX: 7, RCX: CmdGetTarget}
	v.Serve(&r)
	if r.RAX != math.MaxUint32 || r.RBX != 7 {
		t.Errorf("wrong magic: %+v, want EAX all ones and RBX untouched", r)
	}
	s := v.Ledger().Stats()
	if s.Commands["unknown"] != 3 || s.Commands["cmd5"] != 1 || s.Errors["bad_magic"] != 1 || s.Commands["start"] != 7 {
		t.Errorf("counters: commands %v errors %v", s.Commands, s.Errors)
	}
}

func TestVMwareGetTarget(t *testing.T) {
	v, _ := newTestVMware(t)
	l := v.Ledger()
	if err := l.SetTarget(4 << 20); err != nil {
		t.Fatal(err)
	}
	if r := call(v, CmdGetTarget, 3072, 0); r.RAX != StatusSuccess || r.RBX != 1024 {
		t.Errorf("GET_TARGET: status %d target %d, want 0 and 1024 frames", r.RAX, r.RBX)
	}
	// The guest's RAM bounds the answer, here and in later lock replies.
	if r := call(v, CmdGetTarget, 100, 0); r.RBX != 100 {
		t.Errorf("GET_TARGET with 100 frames of RAM: target %d", r.RBX)
	}
	if r := call(v, CmdLock, 0x20, 1); r.RAX != StatusSuccess || r.RBX != 100 {
		t.Errorf("LOCK reply: status %d target %d, want 0 and 100", r.RAX, r.RBX)
	}
	// A limit beyond 32 bits needs 64-bit targets.
	if r := call(v, CmdGetTarget, 1<<33, 0); r.RAX != StatusSuccess || r.RBX != 1024 {
		t.Errorf("64-bit limit with 64-bit targets: status %d target %d", r.RAX, r.RBX)
	}
	call(v, CmdStart, CapBasic|CapBatched, 0)
	if r := call(v, CmdGetTarget, 1<<33, 0); r.RAX != StatusCmdInvalid {
		t.Errorf("64-bit limit without 64-bit targets: status %d", r.RAX)
	}
	if r := call(v, CmdGetTarget, 0, 0); r.RAX != StatusSuccess || r.RBX != 1024 {
		t.Errorf("GET_TARGET without a limit: status %d target %d", r.RAX, r.RBX)
	}
	// The target moves under the driver: the next reply carries it.
	if err := l.SetTarget(0); err != nil {
		t.Fatal(err)
	}
	if r := call(v, CmdUnlock, 0x30, 1); r.RAX != StatusPPNUnlocked {
		t.Errorf("UNLOCK of a free page: status %d", r.RAX)
	}
	if r := call(v, CmdGetTarget, 3072, 0); r.RBX != 0 {
		t.Errorf("target %d after setting 0", r.RBX)
	}
}

// TestVMwareBatched follows vmballoon_lock: per-entry statuses in the
// batch page, the target in RBX, and the errors VMware gives.
func TestVMwareBatched(t *testing.T) {
	v, mem := newTestVMware(t)
	if err := v.Ledger().SetTarget(6 << 20); err != nil {
		t.Fatal(err)
	}
	const M = 1 << 20
	mem.putU64(t, 0x40000, 0xdeadbeef) // a page with data, to see it discarded

	// 4K: five fresh pages, one twice, one beyond RAM, one in the hole, one
	// with reserved bits set (ignored), one misaligned address (the low 12
	// bits are status and reserved bits, so the PFN is what counts).
	writeBatch(t, mem, 0x40000, 0x41000, 0x41000, 20*M, 10*M, 0x42000|0xfe0, 0x43000|0x1f)
	r := call(v, CmdBatchedLock, batchGPA>>12, 7)
	if r.RAX != StatusSuccess || r.RBX != 1536 {
		t.Fatalf("BATCHED_LOCK: status %d target %d", r.RAX, r.RBX)
	}
	want := []uint64{StatusSuccess, StatusSuccess, StatusPPNLocked, StatusPPNInvalid, StatusPPNInvalid, StatusSuccess, StatusSuccess}
	if got := statuses(t, mem, 7); !slices.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if e := mem.u64(t, batchGPA+5*8); e != 0x42000|0xfe0 {
		t.Errorf("entry 5 rewritten as %#x: the host changed more than the status bits", e)
	}
	if d := mem.u64(t, 0x40000); d != 0 {
		t.Errorf("locked page still holds %#x: not discarded", d)
	}

	// Unlock: one never locked, one twice.
	writeBatch(t, mem, 0x40000, 0x44000, 0x40000)
	r = call(v, CmdBatchedUnlock, batchGPA>>12, 3)
	if got := statuses(t, mem, 3); r.RAX != StatusSuccess || !slices.Equal(got, []uint64{0, StatusPPNUnlocked, StatusPPNUnlocked}) {
		t.Errorf("BATCHED_UNLOCK: status %d statuses %v", r.RAX, got)
	}

	// 2M: aligned, misaligned, overlapping 4K pages, beyond RAM, high region.
	writeBatch(t, mem, 2*M, 3*M, 0, 8*M, 16*M)
	r = call(v, CmdBatched2MLock, batchGPA>>12, 5)
	want = []uint64{StatusSuccess, StatusPPNInvalid, StatusPPNLocked, StatusPPNInvalid, StatusSuccess}
	if got := statuses(t, mem, 5); r.RAX != StatusSuccess || !slices.Equal(got, want) {
		t.Errorf("BATCHED_2M_LOCK: status %d statuses %v, want %v", r.RAX, got, want)
	}
	writeBatch(t, mem, 2*M, 2*M+0x1000)
	r = call(v, CmdBatchedUnlock, batchGPA>>12, 2) // 4K unlock of 2M pages
	if got := statuses(t, mem, 2); !slices.Equal(got, []uint64{StatusPPNUnlocked, StatusPPNUnlocked}) {
		t.Errorf("4K unlock inside a 2M page: statuses %v", got)
	}
	r = call(v, CmdBatched2MUnlock, batchGPA>>12, 1)
	if got := statuses(t, mem, 1); r.RAX != StatusSuccess || got[0] != StatusSuccess {
		t.Errorf("BATCHED_2M_UNLOCK: status %d statuses %v", r.RAX, got)
	}

	// Malformed batches: the command's status, nothing done.
	before := v.Ledger().Stats()
	for _, tc := range []struct {
		name     string
		pfn, n   uint64
		wantStat uint64
	}{
		{"513 entries", batchGPA >> 12, 513, StatusCmdInvalid},
		{"huge n", batchGPA >> 12, math.MaxUint64, StatusCmdInvalid},
		{"batch page in the hole", (10 * M) >> 12, 1, StatusPPNInvalid},
		{"batch page beyond RAM", 1 << 40, 1, StatusPPNInvalid},
		{"batch PFN overflowing", math.MaxUint64, 1, StatusPPNInvalid},
		{"batch page straddling RAM's end", (20*M - 4096) >> 12, 512, StatusSuccess}, // a whole page, fine
	} {
		r := call(v, CmdBatchedLock, tc.pfn, tc.n)
		if r.RAX != tc.wantStat || r.RBX != 1536 {
			t.Errorf("%s: status %d target %d, want %d and 1536", tc.name, r.RAX, r.RBX, tc.wantStat)
		}
	}
	after := v.Ledger().Stats()
	if after.Errors["batch_invalid"]-before.Errors["batch_invalid"] != 5 {
		t.Errorf("batch_invalid counted %d times, want 5", after.Errors["batch_invalid"]-before.Errors["batch_invalid"])
	}
	// n = 0 is a successful no-op that still carries the target.
	if r := call(v, CmdBatchedLock, batchGPA>>12, 0); r.RAX != StatusSuccess || r.RBX != 1536 {
		t.Errorf("empty batch: status %d target %d", r.RAX, r.RBX)
	}
	checkInvariants(t, v.Ledger())
}

// TestVMwareResetForgetsPages: after a host reset request every
// target-carrying command answers ERROR_RESET; the driver's reset sequence
// (doorbell cleanup, START, GUEST_ID) works through it, and the START
// forgets the pages the driver popped without UNLOCK.
func TestVMwareResetForgetsPages(t *testing.T) {
	v, mem := newTestVMware(t)
	writeBatch(t, mem, 0x40000, 0x41000)
	call(v, CmdBatchedLock, batchGPA>>12, 2)
	v.RequestReset()
	if st := v.State(); st.Negotiated || !st.ResetPending {
		t.Errorf("state after RequestReset: %+v", st)
	}
	for _, cmd := range []uint64{CmdGetTarget, CmdLock, CmdUnlock, CmdBatchedLock, CmdBatchedUnlock, CmdBatched2MLock, CmdBatched2MUnlock} {
		if r := call(v, cmd, batchGPA>>12, 1); r.RAX != StatusReset {
			t.Errorf("command %d with a reset pending: status %d", cmd, r.RAX)
		}
	}
	if v.Ledger().Stats().Held4K != 2 {
		t.Error("pages forgotten before the guest restarted")
	}
	// vmballoon_reset.
	if r := call(v, CmdDoorbellSet, vmciInvalidID, vmciInvalidID); r.RAX != StatusSuccess {
		t.Errorf("doorbell cleanup during a reset: status %d", r.RAX)
	}
	if r := call(v, CmdStart, 0x3e, 0); r.RAX != StatusSuccessWithCaps {
		t.Errorf("START: status %#x", r.RAX)
	}
	if r := call(v, CmdGuestID, 1, 0); r.RAX != StatusSuccess {
		t.Errorf("GUEST_ID: status %d", r.RAX)
	}
	if st := v.Ledger().Stats(); st.HeldBytes != 0 {
		t.Errorf("START kept %d bytes of popped pages", st.HeldBytes)
	}
	r := call(v, CmdBatchedLock, batchGPA>>12, 2)
	if got := statuses(t, mem, 2); r.RAX != StatusSuccess || !slices.Equal(got, []uint64{0, 0}) {
		t.Errorf("relocking popped pages: status %d statuses %v", r.RAX, got)
	}
	if st := v.State(); !st.Negotiated || st.Resets != 7 || st.Starts != 2 {
		t.Errorf("state %+v", st)
	}
}

// TestVMwareConcurrent: several vCPUs serve balloon commands while the API
// sets the target and reads the stats (run with -race).
func TestVMwareConcurrent(t *testing.T) {
	v, mem := newTestVMware(t)
	var wg sync.WaitGroup
	for w := range 3 {
		batch := uint64(0x2000 + w*0x1000) // a batch page per vCPU
		wg.Go(func() {
			for i := range 300 {
				var b [8]byte
				for j := range 8 {
					b[j] = byte((uint64(i*31+w*7+j) % 2048 * 4096) >> (8 * j))
				}
				if err := mem.Write(batch, b[:]); err != nil {
					t.Error(err)
					return
				}
				cmd := uint64(CmdBatchedLock)
				if i%2 == 1 {
					cmd = CmdBatchedUnlock
				}
				call(v, cmd, batch>>12, 1)
				call(v, CmdGetTarget, 2048, 0)
			}
		})
	}
	wg.Go(func() {
		for i := range 300 {
			_ = v.Ledger().SetTarget(uint64(i) * 4096)
			_ = v.Ledger().Stats()
			_ = v.State()
			if i == 150 {
				v.RequestReset()
				call(v, CmdStart, 0x3e, 0)
			}
		}
	})
	wg.Wait()
	checkInvariants(t, v.Ledger())
}

func TestBackdoor(t *testing.T) {
	const magic = BackdoorMagic
	bd := NewBackdoor(BackdoorConfig{TSCHz: 0x1_2345_6789, APICBusHz: 1_000_000_000, X2APIC: true}, quietLog())
	none := NewBackdoor(BackdoorConfig{}, quietLog())
	for _, tc := range []struct {
		name string
		b    *Backdoor
		in   Regs
		want Regs
	}{
		{"GETVERSION", bd, Regs{RAX: magic, RCX: 10, RDX: 0x5658, RBX: math.MaxUint32},
			Regs{RAX: 6, RBX: magic, RCX: 2, RDX: 0x5658}},
		{"GETHZ", bd, Regs{RAX: magic, RCX: 45, RDX: 0x5658, RBX: math.MaxUint32},
			Regs{RAX: 0x23456789, RBX: 1, RCX: 1_000_000_000, RDX: 0x5658}},
		{"GETHZ unknown", none, Regs{RAX: magic, RCX: 45, RDX: 0x5658, RBX: math.MaxUint32},
			Regs{RAX: math.MaxUint32, RBX: math.MaxUint32, RCX: 45, RDX: 0x5658}},
		{"STEALCLOCK probe", bd, Regs{RAX: magic, RCX: 91, RDX: 0x5658, RSI: 0, RDI: 1},
			Regs{RAX: math.MaxUint32, RCX: 91, RDX: 0x5658, RDI: 1}},
		{"GETVCPU_INFO x2apic", bd, Regs{RAX: magic, RCX: 68, RDX: 0x5658, RBX: math.MaxUint32},
			Regs{RAX: 8, RBX: math.MaxUint32, RCX: 68, RDX: 0x5658}},
		{"GETVCPU_INFO xapic", none, Regs{RAX: magic, RCX: 68, RDX: 0x5658},
			Regs{RAX: 0, RCX: 68, RDX: 0x5658}},
		{"unknown command", bd, Regs{RAX: magic, RCX: 30, RDX: 0x5658, RBX: 5},
			Regs{RAX: math.MaxUint32, RCX: 30, RDX: 0x5658, RBX: 5}},
		{"command with high bits", bd, Regs{RAX: magic, RCX: 1<<32 | 10, RDX: 0x5658},
			Regs{RAX: math.MaxUint32, RCX: 1<<32 | 10, RDX: 0x5658}},
		{"wrong magic", bd, Regs{RAX: 0x564D5869, RCX: 10, RDX: 0x5658, RBX: 3},
			Regs{RAX: math.MaxUint32, RCX: 10, RDX: 0x5658, RBX: 3}},
		{"magic in the high half only", bd, Regs{RAX: magic << 32, RCX: 10},
			Regs{RAX: math.MaxUint32, RCX: 10}},
	} {
		r := tc.in
		tc.b.Serve(&r)
		if r != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, r, tc.want)
		}
	}
}
