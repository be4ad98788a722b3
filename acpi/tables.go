package acpi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/kvmm/kvmm/layout"
)

// ErrInvalidConfig reports a Config that Build refuses.
var ErrInvalidConfig = errors.New("invalid ACPI config")

// Identity written into every table header. The OEM ID is 6 bytes and the
// OEM table id 8, both space padded as the spec's fixed-width fields are.
const (
	oemID           = "KVMM  "
	oemTableID      = "KVMMTBL "
	oemRevision     = 1
	creatorID       = "KVMM"
	creatorRevision = 1
)

// Sizes fixed by the spec (ACPI 6.5 §5.2).
const (
	headerLen  = 36 // system description table header
	rsdpLen    = 36 // ACPI 2.0+ RSDP
	rsdpV1Len  = 20 // the part the legacy checksum covers
	facsLen    = 64
	facsAlign  = 64 // FACS must be 64-byte aligned
	tableAlign = 8  // tables only need natural alignment; 8 keeps u64s aligned
	rsdpAlign  = 16 // the legacy scan looks at 16-byte boundaries
	maxCPUs    = 255
	maxBuses   = 256
	ecamBusLen = 1 << 20 // ECAM space per bus: 32 devices x 8 functions x 4 KiB
)

// Config selects what the tables describe.
type Config struct {
	NumCPUs  int  // 1..255
	PCI      bool // add PCI0 + MCFG
	PCIBuses int  // number of buses covered by ECAM/_CRS (1..256), default 256 when 0
	// PRT is the INTx routing of bus 0 (PCI0._PRT): without it Linux finds
	// no interrupt for a function that does not use MSI-X.
	PRT []PRTRoute
	// PCIMMIO64 is the 64-bit BAR window PCI0 forwards (nil: none).
	PCIMMIO64 *Window
	S3        bool // advertise \_S3_
}

// Tables is the built image ready to copy into guest RAM at Base.
type Tables struct {
	Base     uint64 // guest-physical address of Image[0] (= layout.ACPIStart)
	Image    []byte // all tables, laid out contiguously, aligned as the spec requires
	RSDPAddr uint64 // guest-physical address of the RSDP (16-byte aligned; at Base so that the legacy 0xE0000-0xFFFFF scan finds it)
	FACSAddr uint64 // guest-physical address of the FACS
	// Named holds each table's own bytes by signature ("FACP","DSDT","APIC","MCFG","FACS","XSDT") and "RSDP", for tests and `iasl`.
	Named map[string][]byte
}

// validate checks cfg and fills in defaults.
func (cfg Config) validate() (Config, error) {
	if cfg.NumCPUs < 1 || cfg.NumCPUs > maxCPUs {
		return cfg, fmt.Errorf("NumCPUs %d: must be 1..%d: %w", cfg.NumCPUs, maxCPUs, ErrInvalidConfig)
	}
	if cfg.PCIBuses == 0 {
		cfg.PCIBuses = maxBuses
	}
	if cfg.PCIBuses < 1 || cfg.PCIBuses > maxBuses {
		return cfg, fmt.Errorf("PCIBuses %d: must be 1..%d: %w", cfg.PCIBuses, maxBuses, ErrInvalidConfig)
	}
	if uint64(cfg.PCIBuses)*ecamBusLen > layout.ECAMSize {
		return cfg, fmt.Errorf("PCIBuses %d: ECAM window holds %d buses: %w", cfg.PCIBuses, layout.ECAMSize/ecamBusLen, ErrInvalidConfig)
	}
	if len(cfg.PRT) > 255 {
		return cfg, fmt.Errorf("PRT of %d entries: at most 255: %w", len(cfg.PRT), ErrInvalidConfig)
	}
	for _, r := range cfg.PRT {
		if r.Slot > 31 || r.Pin > 3 {
			return cfg, fmt.Errorf("PRT entry slot %d pin %d: slot must be 0..31, pin 0..3: %w", r.Slot, r.Pin, ErrInvalidConfig)
		}
	}
	if w := cfg.PCIMMIO64; w != nil && (w.End <= w.Start || w.Start < 1<<32) {
		return cfg, fmt.Errorf("64-bit PCI window [%#x, %#x]: must be a non-empty range above 4 GiB: %w", w.Start, w.End, ErrInvalidConfig)
	}
	return cfg, nil
}

// Build lays out every table for cfg at layout.ACPIStart: the RSDP first
// (so the legacy scan finds it), then the FACS (64-byte aligned), then the
// XSDT and the tables it lists.
func Build(cfg Config) (*Tables, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("build ACPI tables: %w", err)
	}
	dsdt, err := buildDSDT(cfg)
	if err != nil {
		return nil, fmt.Errorf("build ACPI tables: DSDT: %w", err)
	}
	madt := buildMADT(cfg.NumCPUs)
	var mcfg []byte
	if cfg.PCI {
		mcfg = buildMCFG(cfg.PCIBuses)
	}

	var img image
	rsdpOff := img.reserve(rsdpLen, rsdpAlign)
	facsOff := img.reserve(facsLen, facsAlign)
	listed := 2 // FADT, MADT
	if mcfg != nil {
		listed++
	}
	xsdtOff := img.reserve(headerLen+8*listed, tableAlign)
	fadtOff := img.reserve(fadtLen, tableAlign)
	dsdtOff := img.reserve(len(dsdt), tableAlign)
	madtOff := img.reserve(len(madt), tableAlign)
	mcfgOff := 0
	if mcfg != nil {
		mcfgOff = img.reserve(len(mcfg), tableAlign)
	}
	if room := uint64(layout.ACPIEnd - layout.ACPIStart); uint64(len(img.b)) > room {
		return nil, fmt.Errorf("build ACPI tables: %d bytes do not fit in the %d-byte ACPI area: %w", len(img.b), room, ErrInvalidConfig)
	}

	addr := func(off int) uint64 { return layout.ACPIStart + uint64(off) }
	fadt := buildFADT(addr(facsOff), addr(dsdtOff))
	entries := []uint64{addr(fadtOff), addr(madtOff)}
	if mcfg != nil {
		entries = append(entries, addr(mcfgOff))
	}
	xsdt := buildXSDT(entries)
	rsdp := buildRSDP(addr(xsdtOff))
	facs := buildFACS()

	named := map[string][]byte{
		"RSDP": img.put(rsdpOff, rsdp),
		"FACS": img.put(facsOff, facs),
		"XSDT": img.put(xsdtOff, xsdt),
		"FACP": img.put(fadtOff, fadt),
		"DSDT": img.put(dsdtOff, dsdt),
		"APIC": img.put(madtOff, madt),
	}
	if mcfg != nil {
		named["MCFG"] = img.put(mcfgOff, mcfg)
	}
	// Named gets its own copies so a test editing one cannot corrupt Image.
	for k, v := range named {
		named[k] = bytes.Clone(v)
	}
	return &Tables{
		Base:     layout.ACPIStart,
		Image:    img.b,
		RSDPAddr: addr(rsdpOff),
		FACSAddr: addr(facsOff),
		Named:    named,
	}, nil
}

// image is the contiguous table area being laid out.
type image struct{ b []byte }

// reserve appends size zero bytes at the next multiple of align and returns
// their offset.
func (m *image) reserve(size, align int) int {
	off := (len(m.b) + align - 1) / align * align
	m.b = append(m.b, make([]byte, off+size-len(m.b))...)
	return off
}

// put copies t to off (reserved with len(t)) and returns the image's slice.
func (m *image) put(off int, t []byte) []byte {
	return m.b[off : off+copy(m.b[off:off+len(t)], t)]
}

// newTable returns a zeroed table of length bytes with its header filled
// in; the caller writes the body and then calls setChecksum.
func newTable(sig string, revision byte, length int) []byte {
	t := make([]byte, length)
	copy(t[0:4], sig)
	binary.LittleEndian.PutUint32(t[4:], uint32(length))
	t[8] = revision
	copy(t[10:16], oemID)
	copy(t[16:24], oemTableID)
	binary.LittleEndian.PutUint32(t[24:], oemRevision)
	copy(t[28:32], creatorID)
	binary.LittleEndian.PutUint32(t[32:], creatorRevision)
	return t
}

// setChecksum stores at t[at] the byte that makes the sum of t zero.
func setChecksum(t []byte, at int) {
	t[at] = 0
	t[at] = -sum8(t)
}

func sum8(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// buildRSDP is the ACPI 2.0 root pointer. It lists only the XSDT: every
// ACPICA since 2000 prefers the XSDT when the revision is 2 or more.
func buildRSDP(xsdt uint64) []byte {
	r := make([]byte, rsdpLen)
	copy(r[0:8], "RSD PTR ")
	copy(r[9:15], oemID)
	r[15] = 2 // revision: ACPI 2.0+
	binary.LittleEndian.PutUint32(r[20:], rsdpLen)
	binary.LittleEndian.PutUint64(r[24:], xsdt)
	setChecksum(r[:rsdpV1Len], 8)
	setChecksum(r, 32)
	return r
}

// buildXSDT lists the tables the OS finds from the root (64-bit pointers).
func buildXSDT(entries []uint64) []byte {
	t := newTable("XSDT", 1, headerLen+8*len(entries))
	for i, e := range entries {
		binary.LittleEndian.PutUint64(t[headerLen+8*i:], e)
	}
	setChecksum(t, 9)
	return t
}

// buildFACS is the firmware control structure. It has no checksum; the OS
// writes the S3 waking vector at offset 12, so it must stay in RAM the VMM
// leaves alone across a suspend.
func buildFACS() []byte {
	f := make([]byte, facsLen)
	copy(f[0:4], "FACS")
	binary.LittleEndian.PutUint32(f[4:], facsLen)
	f[32] = 2 // version
	return f
}

// buildMCFG describes one ECAM allocation: segment 0, buses 0..buses-1.
func buildMCFG(buses int) []byte {
	const alloc = headerLen + 8 // after the header and 8 reserved bytes
	t := newTable("MCFG", 1, alloc+16)
	binary.LittleEndian.PutUint64(t[alloc:], layout.ECAMStart)
	binary.LittleEndian.PutUint16(t[alloc+8:], 0) // PCI segment group
	t[alloc+10] = 0                               // start bus
	t[alloc+11] = byte(buses - 1)                 // end bus
	setChecksum(t, 9)
	return t
}
