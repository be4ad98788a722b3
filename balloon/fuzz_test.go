package balloon

import (
	"encoding/binary"
	"math"
	"testing"
)

// The guest controls every register of a balloon call and every byte of a
// batch page. These fuzz targets feed the dispatcher and the batch parser
// arbitrary values and check that nothing panics and the accounting stays
// consistent. `go test` runs the seed corpus; `go test -fuzz FuzzVMware
// ./balloon/` explores.

// The fuzzed VM has 4 MiB of RAM at 0 and 2 MiB at 16 MiB (a hole
// between): small, so that an execution is cheap. fuzzPFNSpan covers both
// regions, the hole and a little beyond.
const fuzzPFNSpan = 18<<20>>12 + 256

// FuzzVMware runs a script of calls: each 25 bytes are one call (a flags
// byte, then RCX, RBX, RSI as little-endian u64). Flag bit 0 replaces the
// magic with junk; bit 1 points RBX at the batch page; bit 2 asks the host
// for a reset first. page is the batch page's initial content; an entry
// with bit 5 set (a reserved bit the driver never sets) is rewritten to a
// page near RAM, so that the fuzzer reaches real locks and unlocks.
func FuzzVMware(f *testing.F) {
	le := binary.LittleEndian
	step := func(flags byte, rcx, rbx, rsi uint64) []byte {
		b := []byte{flags}
		b = le.AppendUint64(b, rcx)
		b = le.AppendUint64(b, rbx)
		return le.AppendUint64(b, rsi)
	}
	page := func(entries ...uint64) []byte {
		var b []byte
		for _, e := range entries {
			b = le.AppendUint64(b, e)
		}
		return b
	}
	// The driver's own sequence: cleanup, START, GUEST_ID, GET_TARGET, a
	// 4K batch lock, a 2M batch lock, unlocks.
	driver := append(append(append(append(append(append(append(
		step(0, CmdDoorbellSet, vmciInvalidID, vmciInvalidID),
		step(0, CmdStart, 0x3e, 0)...),
		step(0, CmdGuestID, 1, 0)...),
		step(0, CmdGetTarget, 3072, 0)...),
		step(2, CmdBatchedLock, 0, 3)...),
		step(2, CmdBatched2MLock, 0, 2)...),
		step(2, CmdBatchedUnlock, 0, 3)...),
		step(2, CmdBatched2MUnlock, 0, 2)...)
	f.Add(driver, page(0x40000, 0x41000, 0x41000, 0x200000, 0x300000))
	f.Add(driver, page(0x20|0x123<<12, 0x20|0x7ff<<12, math.MaxUint64))
	f.Add(append(step(0, CmdStart, 0x3e, 0), step(2, CmdBatchedLock, 0, 512)...), make([]byte, 4096))
	f.Add(append(step(0, CmdStart, 0x3e, 0), step(4, CmdLock, 0x40, 1)...), []byte{})
	f.Add(append(step(0, CmdStart, ^uint64(0), 0), step(0, CmdBatchedLock, 1<<52, 1)...), []byte{1})
	f.Add(append(step(1, CmdStart, 0x3e, 0), step(0, 99, 0, 0)...), []byte{})
	f.Add(append(step(0, CmdStart, 0x3e, 0), step(0, CmdGetTarget, 1<<40, 0)...), []byte{})

	f.Fuzz(func(t *testing.T, script, content []byte) {
		mem := newFakeMemory(4<<20, 2<<20)
		l := NewLedger(mem, VMwareCommands, quietLog())
		v := NewVMware(l, mem, quietLog())
		if err := l.SetTarget(2 << 20); err != nil {
			t.Fatal(err)
		}
		const batch = 0x1000
		var buf [4096]byte
		copy(buf[:], content)
		for i := 0; i+8 <= len(buf); i += 8 {
			if e := le.Uint64(buf[i:]); e&0x20 != 0 {
				le.PutUint64(buf[i:], (e>>12)%fuzzPFNSpan<<12|e&0x1f)
			}
		}
		if err := mem.Write(batch, buf[:]); err != nil {
			t.Fatal(err)
		}
		calls := 0
		for ; len(script) >= 25 && calls < 64; script = script[25:] {
			calls++
			flags := script[0]
			r := Regs{RAX: BalloonMagic, RCX: le.Uint64(script[1:]), RBX: le.Uint64(script[9:]), RSI: le.Uint64(script[17:]), RDX: BalloonPort}
			if flags&1 != 0 {
				r.RAX ^= uint64(script[1]) | 1<<40 | 1
			}
			if flags&2 != 0 {
				r.RBX = batch >> 12
			}
			if flags&4 != 0 {
				v.RequestReset()
			}
			in := r
			v.Serve(&r)
			checkAnswer(t, in, r)
		}
		checkInvariants(t, l)
		s := l.Stats()
		var served uint64
		for _, n := range s.Commands {
			served += n
		}
		if served+s.Errors["bad_magic"] != uint64(calls) {
			t.Errorf("%d calls, %d counted as commands and %d as bad magic", calls, served, s.Errors["bad_magic"])
		}
		if s.ReturnedBytes != mem.discarded {
			t.Errorf("returned %d bytes, memory discarded %d", s.ReturnedBytes, mem.discarded)
		}
	})
}

// checkAnswer: the status is one the protocol defines, registers the
// protocol does not answer in are untouched.
func checkAnswer(t *testing.T, in, out Regs) {
	t.Helper()
	if uint32(in.RAX) != BalloonMagic {
		if out.RAX != math.MaxUint32 || out.RBX != in.RBX || out.RCX != in.RCX {
			t.Errorf("bad magic answered %+v", out)
		}
		return
	}
	switch out.RAX {
	case StatusSuccess, StatusCmdInvalid, StatusPPNInvalid, StatusPPNLocked, StatusPPNUnlocked, StatusReset:
	case StatusSuccessWithCaps:
		if in.RCX != CmdStart || out.RCX&^uint64(HostCaps) != 0 {
			t.Errorf("SUCCESS_WITH_CAPABILITIES for %+v: %+v", in, out)
		}
	default:
		t.Errorf("status %#x for %+v", out.RAX, in)
	}
	if in.RCX == CmdDoorbellSet && out.RAX == StatusReset {
		t.Errorf("VMCI_DOORBELL_SET answered ERROR_RESET")
	}
	if in.RCX != CmdStart && out.RCX != in.RCX {
		t.Errorf("RCX changed by command %d: %#x", in.RCX, out.RCX)
	}
	if out.RSI != in.RSI || out.RDX != in.RDX || out.RDI != in.RDI {
		t.Errorf("RSI/RDX/RDI changed: %+v -> %+v", in, out)
	}
}

// FuzzBatchPage locks and unlocks one batch page of arbitrary content as
// 4K and as 2M pages, and checks each entry's status and that nothing but
// the status bits of the first n entries changed.
func FuzzBatchPage(f *testing.F) {
	le := binary.LittleEndian
	seed := func(n uint16, entries ...uint64) {
		var b []byte
		for _, e := range entries {
			b = le.AppendUint64(b, e)
		}
		f.Add(n, b)
	}
	seed(3, 0x40000, 0x40000, 0x7ff000)
	seed(2, 0x200000, 0x201000)
	seed(4, 0x800000, 0x1000000, 0x13ff000|0x1f, math.MaxUint64)
	seed(512)
	seed(513, 0x40000)
	f.Fuzz(func(t *testing.T, n uint16, content []byte) {
		mem := newFakeMemory(4<<20, 2<<20)
		l := NewLedger(mem, VMwareCommands, quietLog())
		v := NewVMware(l, mem, quietLog())
		call(v, CmdStart, 0x3e, 0)
		const batch = 0x1000
		var page [4096]byte
		copy(page[:], content)
		for _, cmd := range []uint64{CmdBatchedLock, CmdBatched2MLock, CmdBatchedUnlock, CmdBatched2MUnlock, CmdBatchedLock} {
			if err := mem.Write(batch, page[:]); err != nil {
				t.Fatal(err)
			}
			r := call(v, cmd, batch>>12, uint64(n))
			var after [4096]byte
			if err := mem.Read(batch, after[:]); err != nil {
				t.Fatal(err)
			}
			if int(n) > BatchMax {
				if r.RAX != StatusCmdInvalid || after != page {
					t.Fatalf("n=%d: status %d, page changed %v", n, r.RAX, after != page)
				}
				continue
			}
			if r.RAX != StatusSuccess {
				t.Fatalf("command %d: status %d", cmd, r.RAX)
			}
			// A lock of the batch page itself (as a 4K page, or inside a
			// 2M one) discards it; the host then writes the n entries
			// back, and the rest of the page reads as zero.
			wiped := l.Holds(batch, Page4K) || l.Holds(0, Page2M)
			for i := range BatchMax {
				was, is := le.Uint64(page[i*8:]), le.Uint64(after[i*8:])
				switch {
				case i >= int(n) && is != was && !(wiped && is == 0):
					t.Fatalf("entry %d beyond n=%d changed: %#x -> %#x", i, n, was, is)
				case i < int(n) && is&^entryStatusMask != was&^entryStatusMask:
					t.Fatalf("entry %d: more than its status changed: %#x -> %#x", i, was, is)
				case i < int(n) && is&entryStatusMask > StatusPPNUnlocked:
					t.Fatalf("entry %d: status %d", i, is&entryStatusMask)
				}
			}
		}
		checkInvariants(t, l)
	})
}
