package virtio

import (
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzDescriptorChain feeds arbitrary descriptor tables, indirect tables
// and available rings to a queue and consumes everything it offers, the
// way a device does. Whatever the guest wrote, nothing panics, every
// buffer handed to the device is guest RAM, directions are in order, the
// totals add up, and a failure is always ErrBadChain/ErrBadRing.
func FuzzDescriptorChain(f *testing.F) {
	const size = 16
	desc := func(addr uint64, n uint32, flags, next uint16) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b, addr)
		binary.LittleEndian.PutUint32(b[8:], n)
		binary.LittleEndian.PutUint16(b[12:], flags)
		binary.LittleEndian.PutUint16(b[14:], next)
		return b
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	// A block request (header, data, status), an indirect one, a loop, an
	// address outside RAM, a nested indirect table.
	f.Add(cat(desc(bufBase, 16, DescFNext, 1), desc(bufBase+0x200, 512, DescFNext|DescFWrite, 2), desc(bufBase+0x400, 1, DescFWrite, 0)),
		[]byte{}, []byte{0, 0}, uint16(1), uint8(3))
	f.Add(cat(desc(0x30000, 48, DescFIndirect, 0)),
		cat(desc(bufBase, 16, DescFNext, 1), desc(bufBase+0x200, 512, DescFNext|DescFWrite, 2), desc(bufBase+0x400, 1, DescFWrite, 0)),
		[]byte{0, 0}, uint16(1), uint8(3))
	f.Add(cat(desc(bufBase, 16, DescFNext, 1), desc(bufBase, 16, DescFNext, 0)), []byte{}, []byte{0, 0}, uint16(1), uint8(3))
	f.Add(cat(desc(1<<40, 16, 0, 0)), []byte{}, []byte{0, 0, 0, 0}, uint16(2), uint8(1))
	f.Add(cat(desc(0x30000, 16, DescFIndirect, 0)), cat(desc(0x30000, 16, DescFIndirect, 0)), []byte{0, 0}, uint16(1), uint8(3))
	f.Add([]byte{}, []byte{}, []byte{}, uint16(0xFFFF), uint8(0))

	mem := testMem(f, 1<<20)
	f.Fuzz(func(t *testing.T, table, indirect, avail []byte, availIdx uint16, feat uint8) {
		for _, r := range []struct {
			at   uint64
			data []byte
			max  int
		}{{ringDesc, table, 16 * size}, {0x30000, indirect, 0x4000}, {ringDriver, nil, 6 + 2*size}, {ringDevice, nil, 6 + 8*size}} {
			s, _ := mem.Slice(r.at, uint64(r.max))
			clear(s)
			copy(s, r.data)
		}
		ring, _ := mem.Slice(ringDriver+4, 2*size)
		copy(ring, avail)
		_ = mem.WriteU16(ringDriver+2, availIdx)
		var features uint64 = FeatureVersion1
		if feat&1 != 0 {
			features |= FeatureIndirectDesc
		}
		if feat&2 != 0 {
			features |= FeatureEventIdx
		}
		o := &fakeOwner{}
		q, err := newQueue(0, size, o)
		if err != nil {
			t.Fatal(err)
		}
		defer q.kick.Close()
		q.setRegs(driverRegs{size: size, enabled: true, layout: RingLayout{Desc: ringDesc, Driver: ringDriver, Device: ringDevice}})
		if err := q.activate(mem, features); err != nil {
			t.Fatal(err)
		}
		var c Chain
		for range 2 * size {
			ok, err := q.Pop(&c)
			if err != nil {
				if !errors.Is(err, ErrBadChain) && !errors.Is(err, ErrBadRing) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				if !o.isBroken {
					t.Fatal("error without DEVICE_NEEDS_RESET")
				}
				return
			}
			if !ok {
				break
			}
			var r, w uint64
			seenWrite := false
			for _, d := range c.Descs {
				if d.Len == 0 || !mem.Contains(d.Addr, uint64(d.Len)) {
					t.Fatalf("buffer [%#x, +%#x) handed to the device is not RAM", d.Addr, d.Len)
				}
				if !d.Write && seenWrite {
					t.Fatal("readable buffer after a writable one")
				}
				seenWrite = seenWrite || d.Write
				if d.Write {
					w += uint64(d.Len)
				} else {
					r += uint64(d.Len)
				}
			}
			if r != uint64(c.ReadLen) || w != uint64(c.WriteLen) {
				t.Fatalf("totals %d/%d, buffers sum to %d/%d", c.ReadLen, c.WriteLen, r, w)
			}
			if len(c.Descs) > size+MaxIndirectDescs {
				t.Fatalf("%d buffers in one chain", len(c.Descs))
			}
			// Use the chain as a device would: read it all, fill what is
			// writable (bounded), complete it.
			buf := make([]byte, 256)
			rd := c.NewReader(mem)
			for {
				if n, _ := rd.Read(buf); n == 0 {
					break
				}
			}
			wr := c.NewWriter(mem)
			for wr.Len() > 0 && wr.Written() < 1<<16 {
				if _, err := wr.Write(buf[:min(uint32(len(buf)), wr.Len())]); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Push(c.Head, wr.Written()); err != nil {
				t.Fatal(err)
			}
		}
		q.Notify()
		q.EnableNotify()
	})
}
