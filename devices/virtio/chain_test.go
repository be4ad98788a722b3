package virtio

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestParseChainGood(t *testing.T) {
	mem := testMem(t, 4<<20)
	const size = 8
	for _, tc := range []struct {
		name     string
		build    func()
		head     uint16
		want     []Desc
		indirect bool
	}{
		{"single readable", func() {
			putDesc(t, mem, ringDesc, 3, bufBase, 16, 0, 0)
		}, 3, []Desc{{bufBase, 16, false}}, false},
		{"readable then writable chain", func() {
			putDesc(t, mem, ringDesc, 0, bufBase, 16, DescFNext, 5)
			putDesc(t, mem, ringDesc, 5, bufBase+0x100, 512, DescFNext|DescFWrite, 2)
			putDesc(t, mem, ringDesc, 2, bufBase+0x400, 1, DescFWrite, 7) // next ignored without NEXT
		}, 0, []Desc{{bufBase, 16, false}, {bufBase + 0x100, 512, true}, {bufBase + 0x400, 1, true}}, false},
		{"zero-length descriptor dropped", func() {
			putDesc(t, mem, ringDesc, 0, 0xFFFFFFFF0000, 0, DescFNext, 1)
			putDesc(t, mem, ringDesc, 1, bufBase, 4, DescFWrite, 0)
		}, 0, []Desc{{bufBase, 4, true}}, false},
		{"indirect table", func() {
			putDesc(t, mem, ringDesc, 4, 0x30000, 48, DescFIndirect|DescFWrite, 0) // WRITE on it is ignored
			putDesc(t, mem, 0x30000, 0, bufBase, 16, DescFNext, 2)
			putDesc(t, mem, 0x30000, 2, bufBase+0x200, 8, DescFNext, 1)
			putDesc(t, mem, 0x30000, 1, bufBase+0x300, 1, DescFWrite, 0)
		}, 4, []Desc{{bufBase, 16, false}, {bufBase + 0x200, 8, false}, {bufBase + 0x300, 1, true}}, true},
		{"direct descriptors then an indirect one", func() {
			putDesc(t, mem, ringDesc, 1, bufBase, 16, DescFNext, 6)
			putDesc(t, mem, ringDesc, 6, 0x31000, 16, DescFIndirect, 0)
			putDesc(t, mem, 0x31000, 0, bufBase+0x800, 64, DescFWrite, 0)
		}, 1, []Desc{{bufBase, 16, false}, {bufBase + 0x800, 64, true}}, true},
		{"full-length chain", func() {
			for i := uint16(0); i < size; i++ {
				putDesc(t, mem, ringDesc, i, bufBase+uint64(i)*0x10, 0x10, DescFNext, i+1)
			}
			putDesc(t, mem, ringDesc, size-1, bufBase+0x70, 0x10, 0, 0)
		}, 0, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := mem.Slice(ringDesc, 16*size)
			clear(s)
			tc.build()
			var c Chain
			if err := parseChain(mem, s, size, tc.head, true, &c); err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if len(c.Descs) != size || c.ReadLen != 16*size {
					t.Fatalf("got %d descriptors, %d bytes", len(c.Descs), c.ReadLen)
				}
				return
			}
			if c.Head != tc.head || c.Indirect != tc.indirect || len(c.Descs) != len(tc.want) {
				t.Fatalf("chain %+v, want head %d indirect %v %+v", c, tc.head, tc.indirect, tc.want)
			}
			var r, w uint32
			for i, d := range tc.want {
				if c.Descs[i] != d {
					t.Errorf("descriptor %d: %+v, want %+v", i, c.Descs[i], d)
				}
				if d.Write {
					w += d.Len
				} else {
					r += d.Len
				}
			}
			if c.ReadLen != r || c.WriteLen != w {
				t.Errorf("lengths %d/%d, want %d/%d", c.ReadLen, c.WriteLen, r, w)
			}
			if got := len(c.Readable()) + len(c.Writable()); got != len(c.Descs) {
				t.Errorf("readable+writable = %d of %d", got, len(c.Descs))
			}
		})
	}
}

// TestParseChainBogus: every malformed chain a guest can make is refused
// with ErrBadChain, before any buffer is used.
func TestParseChainBogus(t *testing.T) {
	memSize := uint64(4 << 20)
	mem := testMem(t, memSize)
	const size = 8
	for _, tc := range []struct {
		name     string
		build    func()
		head     uint16
		indirect bool
	}{
		{"head index past the queue", func() {}, size, true},
		{"next index past the queue", func() {
			putDesc(t, mem, ringDesc, 0, bufBase, 16, DescFNext, size)
		}, 0, true},
		{"loop", func() {
			putDesc(t, mem, ringDesc, 0, bufBase, 16, DescFNext, 1)
			putDesc(t, mem, ringDesc, 1, bufBase, 16, DescFNext, 0)
		}, 0, true},
		{"self loop", func() {
			putDesc(t, mem, ringDesc, 2, bufBase, 16, DescFNext, 2)
		}, 2, true},
		{"address outside RAM", func() {
			putDesc(t, mem, ringDesc, 0, memSize-8, 16, 0, 0)
		}, 0, true},
		{"address far outside RAM", func() {
			putDesc(t, mem, ringDesc, 0, 0xC0000000, 16, DescFWrite, 0)
		}, 0, true},
		{"length wraps the address space", func() {
			putDesc(t, mem, ringDesc, 0, 0xFFFFFFFFFFFFF000, 0x2000, 0, 0)
		}, 0, true},
		{"readable after writable", func() {
			putDesc(t, mem, ringDesc, 0, bufBase, 1, DescFWrite|DescFNext, 1)
			putDesc(t, mem, ringDesc, 1, bufBase, 16, 0, 0)
		}, 0, true},
		{"indirect without the feature", func() {
			putDesc(t, mem, ringDesc, 0, 0x30000, 16, DescFIndirect, 0)
			putDesc(t, mem, 0x30000, 0, bufBase, 16, 0, 0)
		}, 0, false},
		{"indirect with NEXT", func() {
			putDesc(t, mem, ringDesc, 0, 0x30000, 16, DescFIndirect|DescFNext, 1)
			putDesc(t, mem, 0x30000, 0, bufBase, 16, 0, 0)
		}, 0, true},
		{"indirect table length not a multiple of 16", func() {
			putDesc(t, mem, ringDesc, 0, 0x30000, 20, DescFIndirect, 0)
		}, 0, true},
		{"empty indirect table", func() {
			putDesc(t, mem, ringDesc, 0, 0x30000, 0, DescFIndirect, 0)
		}, 0, true},
		{"indirect table outside RAM", func() {
			putDesc(t, mem, ringDesc, 0, memSize-16, 32, DescFIndirect, 0)
		}, 0, true},
		{"indirect table too large", func() {
			putDesc(t, mem, ringDesc, 0, 0x30000, 16*(MaxIndirectDescs+1), DescFIndirect, 0)
		}, 0, true},
		{"nested indirect table", func() {
			putDesc(t, mem, ringDesc, 0, 0x30000, 16, DescFIndirect, 0)
			putDesc(t, mem, 0x30000, 0, 0x30000, 16, DescFIndirect, 0)
		}, 0, true},
		{"loop inside an indirect table", func() {
			putDesc(t, mem, ringDesc, 0, 0x30000, 32, DescFIndirect, 0)
			putDesc(t, mem, 0x30000, 0, bufBase, 16, DescFNext, 1)
			putDesc(t, mem, 0x30000, 1, bufBase, 16, DescFNext, 0)
		}, 0, true},
		{"indirect next outside the table", func() {
			putDesc(t, mem, ringDesc, 0, 0x30000, 32, DescFIndirect, 0)
			putDesc(t, mem, 0x30000, 0, bufBase, 16, DescFNext, 2)
		}, 0, true},
		{"indirect entry outside RAM", func() {
			putDesc(t, mem, ringDesc, 0, 0x30000, 16, DescFIndirect, 0)
			putDesc(t, mem, 0x30000, 0, memSize, 1, DescFWrite, 0)
		}, 0, true},
		{"lengths add up past 4 GiB", func() {
			// 1024 entries of 4 MiB - 64 KiB each: every one is RAM, the
			// sum is not a 32-bit length.
			putDesc(t, mem, ringDesc, 0, 0x30000, 16*MaxIndirectDescs, DescFIndirect, 0)
			for i := uint16(0); i < MaxIndirectDescs; i++ {
				putDesc(t, mem, 0x30000, i, 0x10000, uint32(memSize-0x10000), DescFWrite|DescFNext, i+1)
			}
		}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := mem.Slice(ringDesc, 16*size)
			clear(s)
			tc.build()
			var c Chain
			err := parseChain(mem, s, size, tc.head, tc.indirect, &c)
			if !errors.Is(err, ErrBadChain) {
				t.Fatalf("error %v, want ErrBadChain", err)
			}
			t.Log(err)
		})
	}
}

func TestChainReaderWriter(t *testing.T) {
	mem := testMem(t, 4<<20)
	c := Chain{Descs: []Desc{{bufBase, 3, false}, {bufBase + 0x10, 5, false}, {bufBase + 0x100, 4, true}, {bufBase + 0x200, 6, true}},
		ReadLen: 8, WriteLen: 10}
	_ = mem.Write(bufBase, []byte("abc"))
	_ = mem.Write(bufBase+0x10, []byte("defgh"))
	got, err := io.ReadAll(c.NewReader(mem))
	if err != nil || string(got) != "abcdefgh" {
		t.Fatalf("read %q, %v", got, err)
	}
	w := c.NewWriter(mem)
	if n, err := w.Write([]byte("0123456")); n != 7 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if n, err := w.Write([]byte("789ab")); n != 3 || !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("overflowing write: %d, %v", n, err)
	}
	if w.Written() != 10 || w.Len() != 0 {
		t.Fatalf("written %d, left %d", w.Written(), w.Len())
	}
	a := make([]byte, 4)
	b := make([]byte, 6)
	_ = mem.Read(bufBase+0x100, a)
	_ = mem.Read(bufBase+0x200, b)
	if string(a)+string(b) != "0123456789" {
		t.Fatalf("guest memory holds %q %q", a, b)
	}
	// Zero-copy slices span buffers.
	r := c.NewReader(mem)
	sl, err := r.Slices(6, nil)
	if err != nil || len(sl) != 2 || !bytes.Equal(sl[0], []byte("abc")) || !bytes.Equal(sl[1], []byte("def")) || r.Len() != 2 {
		t.Fatalf("slices %q, left %d, %v", sl, r.Len(), err)
	}
	w = c.NewWriter(mem)
	sl, _ = w.Slices(100, nil)
	if len(sl) != 2 || w.Written() != 10 {
		t.Fatalf("writer slices %d, written %d", len(sl), w.Written())
	}
}
