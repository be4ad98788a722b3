package balloon

import (
	"encoding/binary"
	"testing"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

// FuzzParseStats: any bytes decode without a panic into at most
// numKnownStats + maxUnknownStats values, every whole entry counted, the
// tail reported, and the last value of a known tag kept.
func FuzzParseStats(f *testing.F) {
	entry := func(tag uint16, v uint64) []byte {
		return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint16(nil, tag), v)
	}
	var linux []byte
	for _, tag := range []uint16{0, 1, 2, 3, 8, 9, 4, 5, 6, 7} {
		linux = append(linux, entry(tag, uint64(tag)<<20)...)
	}
	f.Add(linux)
	f.Add(append(entry(4, 1), entry(4, 2)...))             // a tag twice
	f.Add(append(entry(0xFFFF, 1), 1, 2, 3))               // unknown tag, tail
	f.Add([]byte{})                                        // an empty buffer
	f.Add(append(entry(100, 1), entry(101, 2)...))         // two unknown tags
	f.Add(make([]byte, StatEntrySize*(maxUnknownStats+8))) // tag 0 many times
	f.Fuzz(func(t *testing.T, b []byte) {
		values, p := ParseStats(b)
		if p.Entries != len(b)/StatEntrySize || p.Trailing != len(b)%StatEntrySize {
			t.Fatalf("%d bytes: %+v", len(b), p)
		}
		if len(values) > numKnownStats+maxUnknownStats {
			t.Fatalf("%d values kept", len(values))
		}
		last := map[string]uint64{}
		for i := 0; i+StatEntrySize <= len(b); i += StatEntrySize {
			if tag := binary.LittleEndian.Uint16(b[i:]); tag < numKnownStats {
				last[StatName(tag)] = binary.LittleEndian.Uint64(b[i+2:])
			}
		}
		for name, v := range last {
			if values[name] != v {
				t.Fatalf("%s = %d, want the last value %d", name, values[name], v)
			}
		}
	})
}

// FuzzQueuePayloads sends arbitrary payloads through the device's queues
// the way a driver would: PFN arrays on the inflate and deflate queues,
// free ranges on the reporting queue, statistics buffers on the stats
// queue. Whatever the guest wrote, nothing panics, every buffer comes back
// (the device never needs a reset for a payload), the held set stays
// within RAM and the statistics stay bounded. PFNs and ranges below 8 MiB
// are moved up: that is where the harness keeps its rings, and a guest
// that balloons its own rings only hurts itself.
func FuzzQueuePayloads(f *testing.F) {
	pfns := func(p ...uint32) []byte {
		var b []byte
		for _, v := range p {
			b = binary.LittleEndian.AppendUint32(b, v)
		}
		return b
	}
	f.Add(uint8(0), pfns(0x900, 0x901, 0x902))                 // inflate
	f.Add(uint8(1), pfns(0x900, 0x955))                        // deflate, one not held
	f.Add(uint8(0), pfns(0xFFFFFFFF, 0x1000, 0xC0000, 0x900))  // not RAM, held twice
	f.Add(uint8(0), []byte{1, 2, 3})                           // a partial PFN
	f.Add(uint8(2), pfns(0x800000, 0x200000, 0x900123, 0x100)) // ranges: aligned, misaligned
	f.Add(uint8(3), append(binary.LittleEndian.AppendUint16(nil, 4), make([]byte, 8)...))
	f.Add(uint8(3), []byte{})
	f.Add(uint8(3), make([]byte, MaxStatsBytes+5))

	const ram, sandbox, payloadMax = 16 << 20, 8 << 20, 64 << 10
	r := newRig(f, ram)
	d := r.initDriver(f, allFeatures, linuxStats(8<<20, 1))
	r.waitPrimed(f)
	payload := r.Alloc(payloadMax, 4096)
	if payload+payloadMax > sandbox {
		f.Fatal("the harness's memory reaches the sandbox")
	}
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		b = b[:min(len(b), payloadMax)]
		switch which % 4 {
		case 0, 1:
			b = append([]byte(nil), b...)
			for i := 0; i+4 <= len(b); i += 4 {
				if v := binary.LittleEndian.Uint32(b[i:]); v < sandbox>>PFNShift {
					binary.LittleEndian.PutUint32(b[i:], v|sandbox>>PFNShift)
				}
			}
			if err := r.Mem.Write(payload, b); err != nil {
				t.Fatal(err)
			}
			q := d.inflate
			if which%4 == 1 {
				q = d.deflate
			}
			if _, ok := q.Submit(waitTime, virtiotest.Buf{Addr: payload, Len: uint32(len(b))}); !ok {
				t.Fatalf("buffer not used; status %#x", r.Status())
			}
		case 2:
			// Pairs of (offset, length) inside the sandbox: reported
			// ranges, aligned or not.
			var bufs []virtiotest.Buf
			for i := 0; i+8 <= len(b) && len(bufs) < 16; i += 8 {
				off := uint64(binary.LittleEndian.Uint32(b[i:])) % sandbox
				n := uint64(binary.LittleEndian.Uint32(b[i+4:])) % (sandbox - off)
				if n == 0 {
					continue
				}
				bufs = append(bufs, virtiotest.Buf{Addr: sandbox + off, Len: uint32(n), Write: true})
			}
			if len(bufs) == 0 {
				return
			}
			if _, ok := d.reporting.Submit(waitTime, bufs...); !ok {
				t.Fatalf("report not used; status %#x", r.Status())
			}
		case 3:
			// A second statistics buffer: the device keeps it and gives
			// the older one back.
			if err := r.Mem.Write(payload, b); err != nil {
				t.Fatal(err)
			}
			d.stats.AddAndPublish(virtiotest.Buf{Addr: payload, Len: uint32(len(b))})
			r.Notify(d.stats.Index)
			if _, _, ok := d.stats.WaitUsed(waitTime); !ok {
				t.Fatalf("the older statistics buffer was not returned; status %#x", r.Status())
			}
			if g := r.dev.State().GuestStats; g == nil || len(g.Values) > numKnownStats+maxUnknownStats {
				t.Fatalf("statistics %+v", g)
			}
		}
		if s := r.Status(); s&virtio.StatusNeedsReset != 0 {
			t.Fatalf("status %#x after a payload", s)
		}
		// Only sandbox pages can be held: the rest is not RAM.
		if st := r.ledger.Stats(); st.HeldBytes > ram-sandbox || st.Held2M != 0 {
			t.Fatalf("held %d bytes (%d 2M pages), at most the %d-byte sandbox", st.HeldBytes, st.Held2M, ram-sandbox)
		}
	})
}
