package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Mapping is one entry of /proc/PID/smaps, with the sizes in bytes.
type Mapping struct {
	Start, End uint64
	Perms      string
	Path       string // file, "[heap]", "[stack]", ... or "" when anonymous
	Size       uint64
	Rss        uint64
	Anonymous  uint64
}

// Anon reports whether the mapping is anonymous memory (no file, not a
// kernel-named area such as [stack] or [vdso]).
func (m Mapping) Anon() bool { return m.Path == "" }

// ParseSmaps reads the text of /proc/PID/smaps.
func ParseSmaps(data []byte) ([]Mapping, error) {
	var (
		maps []Mapping
		cur  *Mapping
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if start, end, ok := parseRange(fields[0]); ok && len(fields) >= 5 {
			maps = append(maps, Mapping{Start: start, End: end, Perms: fields[1]})
			cur = &maps[len(maps)-1]
			if len(fields) >= 6 {
				// Paths may contain spaces: everything after the inode.
				cur.Path = strings.Join(fields[5:], " ")
			}
			continue
		}
		if cur == nil {
			return nil, fmt.Errorf("smaps line %d: %q before any mapping", line, text)
		}
		var dst *uint64
		switch fields[0] {
		case "Size:":
			dst = &cur.Size
		case "Rss:":
			dst = &cur.Rss
		case "Anonymous:":
			dst = &cur.Anonymous
		default:
			continue
		}
		if len(fields) != 3 || fields[2] != "kB" {
			return nil, fmt.Errorf("smaps line %d: %q: want \"<field>: <n> kB\"", line, text)
		}
		kb, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("smaps line %d: %w", line, err)
		}
		*dst = kb * 1024
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading smaps: %w", err)
	}
	return maps, nil
}

// parseRange reads "start-end" in hex, the first field of a mapping line.
func parseRange(s string) (start, end uint64, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseUint(a, 16, 64)
	end, err2 := strconv.ParseUint(b, 16, 64)
	return start, end, err1 == nil && err2 == nil && end >= start
}

// guestRAMSlack is how much larger than the guest's RAM the mapping that
// holds it may be: the kernel merges an adjacent anonymous mapping of the
// same protection into one VMA (kvmm's Go runtime has small ones next to
// it), and QEMU rounds its RAM block up to its alignment.
const guestRAMSlack = 2 << 20

// MemoryUse is a VMM process's resident memory split into the guest's RAM
// and everything else.
type MemoryUse struct {
	// Total is the process's resident set (the sum of every mapping's Rss).
	Total uint64
	// Anonymous is its anonymous resident memory (heap, stacks, guest RAM).
	Anonymous uint64
	// GuestTouched is the resident part of the guest-RAM mapping: the
	// pages the guest (or the loader) touched.
	GuestTouched uint64
	// GuestMapping is the mapping taken to be guest RAM.
	GuestMapping Mapping
}

// Overhead is the resident memory beyond the guest RAM the guest touched.
func (u MemoryUse) Overhead() uint64 { return u.Total - u.GuestTouched }

// AnonOverhead is the anonymous part of Overhead: what the VMM allocated
// (heap, stacks, buffers), without its binary and shared libraries.
func (u MemoryUse) AnonOverhead() uint64 { return u.Anonymous - u.GuestTouched }

// FileBacked is the resident memory mapped from files: the VMM's binary
// and its shared libraries (page cache, shared with other processes).
func (u MemoryUse) FileBacked() uint64 { return u.Total - u.Anonymous }

// SplitMemory finds the guest-RAM mapping of a guest with ramSize bytes of
// RAM (the smallest writable anonymous mapping at least that large and at
// most guestRAMSlack larger) and splits the process's resident memory.
func SplitMemory(maps []Mapping, ramSize uint64) (MemoryUse, error) {
	var u MemoryUse
	found := false
	for _, m := range maps {
		u.Total += m.Rss
		u.Anonymous += m.Anonymous
		if !m.Anon() || !strings.HasPrefix(m.Perms, "rw") || m.Size < ramSize || m.Size > ramSize+guestRAMSlack {
			continue
		}
		if !found || m.Size < u.GuestMapping.Size {
			u.GuestMapping, found = m, true
		}
	}
	if !found {
		return u, fmt.Errorf("no anonymous rw mapping of %d to %d bytes: cannot tell the guest RAM", ramSize, ramSize+guestRAMSlack)
	}
	u.GuestTouched = u.GuestMapping.Rss
	if u.GuestTouched > u.Total || u.GuestMapping.Anonymous > u.Anonymous {
		return u, fmt.Errorf("inconsistent smaps: guest RAM Rss %d exceeds the process total %d", u.GuestTouched, u.Total)
	}
	// Count guest RAM as anonymous even where smaps does not (it always
	// does for a private anonymous mapping).
	u.Anonymous += u.GuestTouched - u.GuestMapping.Anonymous
	return u, nil
}
