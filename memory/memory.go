// Package memory is guest RAM: the one type through which every device and
// loader reads and writes guest-physical memory. Every access is checked
// against the RAM regions, so a guest-supplied address can never reach
// outside the mapping.
package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/layout"
)

// ErrOutOfRange reports a guest-physical range that is not entirely RAM.
var ErrOutOfRange = errors.New("guest address range is not RAM")

// Region is one contiguous piece of guest RAM backed by host memory.
type Region struct {
	GPA  uint64 // guest-physical start
	host []byte // host mapping; len is the size
}

// Size is the region's length in bytes.
func (r Region) Size() uint64 { return uint64(len(r.host)) }

// End is the first guest-physical address past the region.
func (r Region) End() uint64 { return r.GPA + uint64(len(r.host)) }

// Host returns the host mapping; only the KVM memory-slot setup and
// host-side reclaim (madvise) may use it.
func (r Region) Host() []byte { return r.host }

// Guest is the VM's RAM.
type Guest struct {
	regions []Region
	mapping []byte // one host mapping for all regions
}

// Options select how RAM is backed.
type Options struct {
	// HugePages backs RAM with hugetlbfs (2 MiB) pages.
	HugePages bool
}

// New maps size bytes of guest RAM laid out around the 32-bit MMIO hole:
// RAM below layout.MMIOHoleStart, the rest from layout.HighRAMStart.
func New(size uint64, opts Options) (*Guest, error) {
	if size < layout.MiB || size%layout.PageSize != 0 {
		return nil, fmt.Errorf("guest memory size %d: must be at least 1 MiB and a multiple of 4 KiB", size)
	}
	// Plain RAM is overcommitted (MAP_NORESERVE): the guest touches what it
	// uses. Huge pages must be reserved up front instead: a hugetlb mapping
	// with MAP_NORESERVE succeeds and then kills the process with SIGBUS on
	// the first touch when the pool is empty.
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_NORESERVE
	if opts.HugePages {
		if size%(2*layout.MiB) != 0 {
			return nil, fmt.Errorf("guest memory size %d: must be a multiple of 2 MiB with huge pages", size)
		}
		flags = unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_HUGETLB
	}
	mapping, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		if opts.HugePages {
			return nil, fmt.Errorf("mmap %d bytes of guest memory in 2 MiB huge pages: %w "+
				"(reserve %d pages: echo %d > /proc/sys/vm/nr_hugepages)", size, err, size/(2*layout.MiB), size/(2*layout.MiB))
		}
		return nil, fmt.Errorf("mmap %d bytes of guest memory: %w", size, err)
	}
	g := &Guest{mapping: mapping}
	low := min(size, uint64(layout.MMIOHoleStart))
	g.regions = append(g.regions, Region{GPA: 0, host: mapping[:low]})
	if size > low {
		g.regions = append(g.regions, Region{GPA: layout.HighRAMStart, host: mapping[low:]})
	}
	return g, nil
}

// Close unmaps guest RAM. The Guest must not be used afterwards.
func (g *Guest) Close() error {
	if g.mapping == nil {
		return nil
	}
	err := unix.Munmap(g.mapping)
	g.mapping, g.regions = nil, nil
	return err
}

// Regions lists the RAM regions in ascending address order.
func (g *Guest) Regions() []Region { return g.regions }

// Size is the total RAM in bytes.
func (g *Guest) Size() uint64 { return uint64(len(g.mapping)) }

// Slice returns the host bytes backing [gpa, gpa+n). The range must lie in
// one region. The slice aliases guest RAM: the guest may change it at any
// time, so callers copy what they validate before acting on it.
func (g *Guest) Slice(gpa, n uint64) ([]byte, error) {
	for _, r := range g.regions {
		if gpa >= r.GPA && gpa < r.End() {
			off := gpa - r.GPA
			if n > r.Size()-off {
				break
			}
			return r.host[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfRange, gpa, n)
}

// Contains reports whether [gpa, gpa+n) is entirely RAM in one region.
func (g *Guest) Contains(gpa, n uint64) bool {
	_, err := g.Slice(gpa, n)
	return err == nil
}

// Read copies guest memory at gpa into buf.
func (g *Guest) Read(gpa uint64, buf []byte) error {
	s, err := g.Slice(gpa, uint64(len(buf)))
	if err != nil {
		return err
	}
	copy(buf, s)
	return nil
}

// Write copies buf into guest memory at gpa.
func (g *Guest) Write(gpa uint64, buf []byte) error {
	s, err := g.Slice(gpa, uint64(len(buf)))
	if err != nil {
		return err
	}
	copy(s, buf)
	return nil
}

// ReadU16, ReadU32, ReadU64 and the Write forms access little-endian values.
func (g *Guest) ReadU16(gpa uint64) (uint16, error) {
	s, err := g.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

func (g *Guest) ReadU32(gpa uint64) (uint32, error) {
	s, err := g.Slice(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

func (g *Guest) ReadU64(gpa uint64) (uint64, error) {
	s, err := g.Slice(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(s), nil
}

func (g *Guest) WriteU16(gpa uint64, v uint16) error {
	s, err := g.Slice(gpa, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(s, v)
	return nil
}

func (g *Guest) WriteU32(gpa uint64, v uint32) error {
	s, err := g.Slice(gpa, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(s, v)
	return nil
}

func (g *Guest) WriteU64(gpa uint64, v uint64) error {
	s, err := g.Slice(gpa, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(s, v)
	return nil
}

// Discard gives the host memory backing [gpa, gpa+n) back to the host
// kernel: the balloon's reclaim. gpa and n must be multiples of 4 KiB (of
// 2 MiB with huge pages, or madvise refuses) and the range must lie in one
// region. The range reads as zero afterwards and is backed again, by fresh
// zeroed pages, when the guest next touches it.
//
// MADV_DONTNEED and not MADV_FREE: FREE only lets the kernel take the pages
// when it runs short, so the process's RSS would not drop and the host
// could not count on the memory. MADV_REMOVE is for shared mappings; guest
// RAM is private and anonymous, where DONTNEED already frees the pages.
// KVM's MMU notifier drops the guest mappings of the range with them.
func (g *Guest) Discard(gpa, n uint64) error {
	if gpa%layout.PageSize != 0 || n%layout.PageSize != 0 {
		return fmt.Errorf("discard [%#x, +%#x): not a whole number of 4 KiB pages", gpa, n)
	}
	if n == 0 {
		return nil
	}
	s, err := g.Slice(gpa, n)
	if err != nil {
		return fmt.Errorf("discard: %w", err)
	}
	if err := unix.Madvise(s, unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("discard [%#x, +%#x): madvise(MADV_DONTNEED): %w", gpa, n, err)
	}
	return nil
}

// Resident reports how many bytes of [gpa, gpa+n) are backed by host memory
// right now (mincore), so that a test or a benchmark can check what
// Discard gave back without trusting a counter. gpa must be 4 KiB aligned
// and the range must lie in one region.
func (g *Guest) Resident(gpa, n uint64) (uint64, error) {
	if gpa%layout.PageSize != 0 {
		return 0, fmt.Errorf("resident [%#x, +%#x): not 4 KiB aligned", gpa, n)
	}
	if n == 0 {
		return 0, nil
	}
	s, err := g.Slice(gpa, n)
	if err != nil {
		return 0, fmt.Errorf("resident: %w", err)
	}
	vec := make([]byte, (n+layout.PageSize-1)/layout.PageSize)
	// x/sys/unix has no Mincore wrapper. The host range is page aligned:
	// regions start on page boundaries of the mmap'd mapping.
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&s[0])), uintptr(len(s)),
		uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return 0, fmt.Errorf("resident [%#x, +%#x): mincore: %w", gpa, n, errno)
	}
	var pages uint64
	for _, b := range vec {
		pages += uint64(b & 1)
	}
	return min(pages*layout.PageSize, n), nil
}
