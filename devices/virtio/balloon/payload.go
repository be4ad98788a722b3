package balloon

import "encoding/binary"

// Bounds on what one buffer makes the device do. A descriptor is a few
// bytes of guest work but may describe up to 4 GiB; without these, one
// buffer could keep a device worker busy for minutes.
const (
	// MaxPFNBytes bounds the PFN array of one inflate or deflate buffer:
	// 256 Ki PFNs, 1 GiB of guest memory. Linux sends at most
	// VIRTIO_BALLOON_ARRAY_PFNS_MAX (256) PFNs, 1 KiB, per buffer. PFNs
	// past the bound are ignored and the buffer is counted as malformed:
	// those pages stay the guest's (nothing is discarded), which is safe.
	MaxPFNBytes = 1 << 20
	// MaxStatsBytes bounds the statistics read from one buffer: 409
	// entries, where the spec defines 16 tags and Linux 6.1 sends 10.
	MaxStatsBytes = 4096
	// maxUnknownStats bounds the distinct unknown tags kept from one
	// buffer, so a guest cannot grow the host's map with 400 made-up tags
	// per request.
	maxUnknownStats = 16
)

// AppendPFNs appends the little-endian 32-bit page frame numbers in b to
// dst and returns it with the number of trailing bytes that do not make a
// whole PFN (which a correct driver never sends).
func AppendPFNs(dst []uint32, b []byte) ([]uint32, int) {
	n := len(b) / 4
	for i := range n {
		dst = append(dst, binary.LittleEndian.Uint32(b[4*i:]))
	}
	return dst, len(b) - 4*n
}

// StatsParse describes a decoded statistics buffer.
type StatsParse struct {
	// Entries is the number of whole entries read.
	Entries int
	// Dropped counts unknown tags beyond maxUnknownStats distinct ones.
	Dropped int
	// Trailing is the number of bytes after the last whole entry.
	Trailing int
}

// ParseStats decodes a statistics buffer (struct virtio_balloon_stat
// entries: le16 tag, le64 value, packed) into values by StatName. A tag
// given twice keeps its last value, as QEMU's virtio_balloon_receive_stats
// does. The result is never modified afterwards, so callers may share it.
func ParseStats(b []byte) (map[string]uint64, StatsParse) {
	var p StatsParse
	values := make(map[string]uint64, min(len(b)/StatEntrySize, numKnownStats))
	unknown := 0
	for ; len(b) >= StatEntrySize; b = b[StatEntrySize:] {
		p.Entries++
		tag := binary.LittleEndian.Uint16(b)
		val := binary.LittleEndian.Uint64(b[2:])
		name := StatName(tag)
		if tag >= numKnownStats {
			if _, seen := values[name]; !seen {
				if unknown == maxUnknownStats {
					p.Dropped++
					continue
				}
				unknown++
			}
		}
		values[name] = val
	}
	p.Trailing = len(b)
	return values, p
}
