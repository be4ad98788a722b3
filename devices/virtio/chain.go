package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/kvmm/kvmm/memory"
)

// ErrBadChain is wrapped by every error about a descriptor chain the
// driver should not have made available: the device must stop using the
// queue (DEVICE_NEEDS_RESET).
var ErrBadChain = errors.New("malformed descriptor chain")

// Desc is one buffer of a chain after validation: [Addr, Addr+Len) lies
// in guest RAM, inside one memory region.
type Desc struct {
	Addr  uint64
	Len   uint32
	Write bool // device-writable (VIRTQ_DESC_F_WRITE)
}

// Chain is what Queue.Pop returns: the head index to hand back with Push,
// and the buffers in chain order, device-readable ones before
// device-writable ones (spec §2.7.4.2; anything else is refused).
// Zero-length descriptors are dropped: they carry nothing.
type Chain struct {
	Head  uint16
	Descs []Desc
	// ReadLen and WriteLen are the byte totals of each direction.
	ReadLen, WriteLen uint32
	// Indirect reports that the buffers came from an indirect table.
	Indirect bool
}

// Readable returns the device-readable buffers.
func (c *Chain) Readable() []Desc {
	for i, d := range c.Descs {
		if d.Write {
			return c.Descs[:i]
		}
	}
	return c.Descs
}

// Writable returns the device-writable buffers.
func (c *Chain) Writable() []Desc { return c.Descs[len(c.Readable()):] }

// reset empties c, keeping its buffer.
func (c *Chain) reset(head uint16) {
	c.Head, c.Descs, c.ReadLen, c.WriteLen, c.Indirect = head, c.Descs[:0], 0, 0, false
}

// parseChain walks the chain starting at head of the descriptor table
// table (size entries) into c. Every descriptor is copied out of guest
// memory once before it is checked, so a guest rewriting the table
// concurrently cannot make a checked value differ from a used one.
func parseChain(mem *memory.Guest, table []byte, size uint16, head uint16, indirectOK bool, c *Chain) error {
	c.reset(head)
	if head >= size {
		return fmt.Errorf("%w: head index %d is not below the queue size %d", ErrBadChain, head, size)
	}
	idx := head
	for n := 1; ; n++ {
		// A chain may not be longer than the queue; a longer walk means
		// the next fields form a loop.
		if n > int(size) {
			return fmt.Errorf("%w: chain from head %d is longer than the queue size %d (a loop?)", ErrBadChain, head, size)
		}
		d := readDesc(table, idx)
		if d.flags&DescFIndirect != 0 {
			if !indirectOK {
				return fmt.Errorf("%w: descriptor %d is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated", ErrBadChain, idx)
			}
			if d.flags&DescFNext != 0 {
				return fmt.Errorf("%w: descriptor %d has both INDIRECT and NEXT", ErrBadChain, idx)
			}
			// Direct descriptors may precede it (spec §2.7.5.3.2: the
			// device must handle that); it ends the chain.
			return parseIndirect(mem, d, idx, c)
		}
		if err := c.add(mem, d, idx, "descriptor"); err != nil {
			return err
		}
		if d.flags&DescFNext == 0 {
			return nil
		}
		if d.next >= size {
			return fmt.Errorf("%w: descriptor %d: next %d is not below the queue size %d", ErrBadChain, idx, d.next, size)
		}
		idx = d.next
	}
}

func parseIndirect(mem *memory.Guest, ind rawDesc, at uint16, c *Chain) error {
	if ind.len == 0 || ind.len%descSize != 0 {
		return fmt.Errorf("%w: indirect descriptor %d: table length %d is not a nonzero multiple of %d", ErrBadChain, at, ind.len, descSize)
	}
	count := ind.len / descSize
	if count > MaxIndirectDescs {
		return fmt.Errorf("%w: indirect descriptor %d: table of %d entries exceeds %d", ErrBadChain, at, count, MaxIndirectDescs)
	}
	table, err := mem.Slice(ind.addr, uint64(ind.len))
	if err != nil {
		return fmt.Errorf("%w: indirect descriptor %d: table: %w", ErrBadChain, at, err)
	}
	c.Indirect = true
	var idx uint16
	for n := uint32(1); ; n++ {
		if n > count {
			return fmt.Errorf("%w: indirect table at %#x: chain longer than its %d entries (a loop?)", ErrBadChain, ind.addr, count)
		}
		d := readDesc(table, idx)
		if d.flags&DescFIndirect != 0 {
			return fmt.Errorf("%w: indirect table at %#x: entry %d is itself indirect", ErrBadChain, ind.addr, idx)
		}
		if err := c.add(mem, d, idx, "indirect entry"); err != nil {
			return err
		}
		if d.flags&DescFNext == 0 {
			return nil
		}
		if uint32(d.next) >= count {
			return fmt.Errorf("%w: indirect table at %#x: entry %d: next %d is outside the %d entries", ErrBadChain, ind.addr, idx, d.next, count)
		}
		idx = d.next
	}
}

// add validates one buffer and appends it.
func (c *Chain) add(mem *memory.Guest, d rawDesc, idx uint16, what string) error {
	write := d.flags&DescFWrite != 0
	if !write && c.WriteLen > 0 {
		return fmt.Errorf("%w: %s %d is device-readable but follows a device-writable one", ErrBadChain, what, idx)
	}
	if d.len == 0 {
		return nil
	}
	if d.addr+uint64(d.len)-1 < d.addr {
		return fmt.Errorf("%w: %s %d: [%#x, +%#x) wraps around the address space", ErrBadChain, what, idx, d.addr, d.len)
	}
	if !mem.Contains(d.addr, uint64(d.len)) {
		return fmt.Errorf("%w: %s %d: [%#x, +%#x) is not guest RAM", ErrBadChain, what, idx, d.addr, d.len)
	}
	// The used ring reports a 32-bit length, and devices size requests
	// from these totals.
	total := &c.ReadLen
	if write {
		total = &c.WriteLen
	}
	if uint64(*total)+uint64(d.len) > math.MaxUint32 {
		return fmt.Errorf("%w: %s %d: buffer lengths add up to more than 4 GiB", ErrBadChain, what, idx)
	}
	*total += d.len
	c.Descs = append(c.Descs, Desc{Addr: d.addr, Len: d.len, Write: write})
	return nil
}

// rawDesc is struct virtq_desc as read from guest memory.
type rawDesc struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

func readDesc(table []byte, i uint16) rawDesc {
	e := table[int(i)*descSize : int(i)*descSize+descSize]
	return rawDesc{
		addr:  binary.LittleEndian.Uint64(e[0:]),
		len:   binary.LittleEndian.Uint32(e[8:]),
		flags: binary.LittleEndian.Uint16(e[12:]),
		next:  binary.LittleEndian.Uint16(e[14:]),
	}
}

// ChainReader reads the device-readable bytes of a chain in order.
type ChainReader struct {
	mem  *memory.Guest
	bufs []Desc
	off  uint32 // into bufs[0]
	left uint32
}

// NewReader returns a reader over c's readable buffers.
func (c *Chain) NewReader(mem *memory.Guest) *ChainReader {
	return &ChainReader{mem: mem, bufs: c.Readable(), left: c.ReadLen}
}

// Len is the number of bytes not read yet.
func (r *ChainReader) Len() uint32 { return r.left }

// Read implements io.Reader.
func (r *ChainReader) Read(p []byte) (int, error) {
	n := 0
	for len(p) > 0 && len(r.bufs) > 0 {
		d := r.bufs[0]
		chunk := min(uint32(len(p)), d.Len-r.off)
		if err := r.mem.Read(d.Addr+uint64(r.off), p[:chunk]); err != nil {
			return n, err
		}
		n += int(chunk)
		p = p[chunk:]
		r.advance(chunk)
	}
	if n == 0 && len(r.bufs) == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Slices returns the guest memory of the next n readable bytes as host
// slices (one per buffer touched) and consumes them: zero-copy I/O for a
// device that hands them to a file. Fewer than n bytes are returned when
// the chain has fewer.
func (r *ChainReader) Slices(n uint32, out [][]byte) ([][]byte, error) {
	return slices(r.mem, &r.bufs, &r.off, &r.left, n, out)
}

func (r *ChainReader) advance(n uint32) {
	r.off += n
	r.left -= n
	if r.off == r.bufs[0].Len {
		r.bufs, r.off = r.bufs[1:], 0
	}
}

// ChainWriter writes the device-writable bytes of a chain in order and
// counts them for the used ring.
type ChainWriter struct {
	mem     *memory.Guest
	bufs    []Desc
	off     uint32
	left    uint32
	written uint32
}

// NewWriter returns a writer over c's writable buffers.
func (c *Chain) NewWriter(mem *memory.Guest) *ChainWriter {
	return &ChainWriter{mem: mem, bufs: c.Writable(), left: c.WriteLen}
}

// Len is the room left.
func (w *ChainWriter) Len() uint32 { return w.left }

// Written is the number of bytes written so far.
func (w *ChainWriter) Written() uint32 { return w.written }

// Write implements io.Writer; it writes what fits and returns
// io.ErrShortWrite for the rest.
func (w *ChainWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 && len(w.bufs) > 0 {
		d := w.bufs[0]
		chunk := min(uint32(len(p)), d.Len-w.off)
		if err := w.mem.Write(d.Addr+uint64(w.off), p[:chunk]); err != nil {
			return n, err
		}
		n += int(chunk)
		p = p[chunk:]
		w.advance(chunk)
	}
	if len(p) > 0 {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// Slices is ChainReader.Slices for the writable side; the bytes count as
// written.
func (w *ChainWriter) Slices(n uint32, out [][]byte) ([][]byte, error) {
	before := w.left
	out, err := slices(w.mem, &w.bufs, &w.off, &w.left, n, out)
	w.written += before - w.left
	return out, err
}

func (w *ChainWriter) advance(n uint32) {
	w.off += n
	w.left -= n
	w.written += n
	if w.off == w.bufs[0].Len {
		w.bufs, w.off = w.bufs[1:], 0
	}
}

func slices(mem *memory.Guest, bufs *[]Desc, off, left *uint32, n uint32, out [][]byte) ([][]byte, error) {
	out = out[:0]
	for n > 0 && len(*bufs) > 0 {
		d := (*bufs)[0]
		chunk := min(n, d.Len-*off)
		s, err := mem.Slice(d.Addr+uint64(*off), uint64(chunk))
		if err != nil {
			return out, err
		}
		out = append(out, s)
		n -= chunk
		*off += chunk
		*left -= chunk
		if *off == d.Len {
			*bufs, *off = (*bufs)[1:], 0
		}
	}
	return out, nil
}
