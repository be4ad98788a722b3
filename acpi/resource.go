package acpi

import (
	"encoding/binary"
	"fmt"
)

// Resource is one resource descriptor of a ResourceTemplate (ACPI 6.5 §6.4).
// Like Term, it carries a construction error instead of returning it.
type Resource struct {
	b   []byte
	err error
}

// Bytes returns the descriptor's encoding or the error met building it.
func (r Resource) Bytes() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	return r.b, nil
}

// MemCaching is the _MEM field of a memory address space descriptor.
type MemCaching uint8

// Memory caching attributes (§6.4.3.5.4, type-specific flags bits 2:1).
const (
	NonCacheable   MemCaching = 0
	Cacheable      MemCaching = 1
	WriteCombining MemCaching = 2
	Prefetchable   MemCaching = 3
)

// Descriptor tags and fixed lengths (§6.4.2, §6.4.3).
const (
	resIRQNoFlags    = 0x22 // small item 0x04, 2 bytes
	resIO            = 0x47 // small item 0x08, 7 bytes
	resEndTag        = 0x79 // small item 0x0F, 1 byte
	resMemory32Fixed = 0x86
	resDWordAddr     = 0x87
	resWordAddr      = 0x88
	resQWordAddr     = 0x8A

	// Address space descriptor resource types.
	resTypeMemory = 0
	resTypeIO     = 1
	resTypeBus    = 2

	// General flags of a bridge window: ResourceProducer (bit0 = 0),
	// PosDecode (bit1 = 0), MinFixed (bit2), MaxFixed (bit3).
	resWindowFlags = 1<<2 | 1<<3
	// IO type-specific flags: EntireRange (ISA and non-ISA ports).
	resIOEntireRange = 3
	// Memory type-specific flags: ReadWrite (bit0).
	resMemReadWrite = 1
)

// ResourceTemplate encodes descriptors as a buffer closed by the End Tag.
// Its checksum byte is 0, which the spec defines as "checksum valid".
func ResourceTemplate(res ...Resource) Term {
	var b []byte
	for _, r := range res {
		if r.err != nil {
			return termErr(fmt.Errorf("ResourceTemplate: %w", r.err))
		}
		b = append(b, r.b...)
	}
	return Buffer(append(b, resEndTag, 0x00))
}

// IO is a 16-bit-decoded I/O port descriptor: the device may sit anywhere
// from lo to hi (equal for fixed ports), aligned, spanning length ports.
func IO(lo, hi uint16, align, length uint8) Resource {
	if hi < lo {
		return resErr("IO", uint64(lo), uint64(hi))
	}
	b := []byte{resIO, 0x01, 0, 0, 0, 0, align, length} // 0x01: Decode16
	binary.LittleEndian.PutUint16(b[2:], lo)
	binary.LittleEndian.PutUint16(b[4:], hi)
	return Resource{b: b}
}

// IRQNoFlags is an ISA IRQ descriptor (edge, active high) for irqs 0-15.
func IRQNoFlags(irqs ...uint8) Resource {
	var mask uint16
	for _, irq := range irqs {
		if irq > 15 {
			return Resource{err: fmt.Errorf("IRQNoFlags: IRQ %d is not an ISA IRQ: %w", irq, ErrAML)}
		}
		mask |= 1 << irq
	}
	return Resource{b: []byte{resIRQNoFlags, byte(mask), byte(mask >> 8)}}
}

// Memory32Fixed is a fixed 32-bit memory range a device consumes, as
// motherboard resources declare reserved windows.
func Memory32Fixed(readWrite bool, base, length uint32) Resource {
	b := make([]byte, 12)
	b[0] = resMemory32Fixed
	binary.LittleEndian.PutUint16(b[1:], 9)
	if readWrite {
		b[3] = 1
	}
	binary.LittleEndian.PutUint32(b[4:], base)
	binary.LittleEndian.PutUint32(b[8:], length)
	return Resource{b: b}
}

// WordBusNumber is the bus-number range a host bridge decodes.
func WordBusNumber(lo, hi uint16) Resource {
	return wordAddr("WordBusNumber", resTypeBus, 0, lo, hi)
}

// WordIO is an I/O port window a host bridge forwards (producer, fixed
// bounds, entire range).
func WordIO(lo, hi uint16) Resource {
	return wordAddr("WordIO", resTypeIO, resIOEntireRange, lo, hi)
}

// DWordIO is WordIO with 32-bit fields.
func DWordIO(lo, hi uint32) Resource {
	return dwordAddr("DWordIO", resTypeIO, resIOEntireRange, lo, hi)
}

// DWordMemory is a read-write 32-bit memory window a host bridge forwards.
func DWordMemory(lo, hi uint32, caching MemCaching) Resource {
	return dwordAddr("DWordMemory", resTypeMemory, memFlags(caching), lo, hi)
}

// QWordMemory is a read-write 64-bit memory window a host bridge forwards.
func QWordMemory(lo, hi uint64, caching MemCaching) Resource {
	if hi < lo || hi-lo == ^uint64(0) {
		return resErr("QWordMemory", lo, hi)
	}
	b := make([]byte, 3+43)
	b[0] = resQWordAddr
	binary.LittleEndian.PutUint16(b[1:], 43)
	b[3], b[4], b[5] = resTypeMemory, resWindowFlags, memFlags(caching)
	// Granularity (b[6:14]) and translation (b[30:38]) stay 0.
	binary.LittleEndian.PutUint64(b[14:], lo)
	binary.LittleEndian.PutUint64(b[22:], hi)
	binary.LittleEndian.PutUint64(b[38:], hi-lo+1)
	return Resource{b: b}
}

func memFlags(c MemCaching) byte { return resMemReadWrite | byte(c&3)<<1 }

// wordAddr is the Word Address Space Descriptor (§6.4.3.5.3).
func wordAddr(what string, typ, typeFlags byte, lo, hi uint16) Resource {
	if hi < lo || hi-lo == 0xFFFF {
		return resErr(what, uint64(lo), uint64(hi))
	}
	b := make([]byte, 3+13)
	b[0] = resWordAddr
	binary.LittleEndian.PutUint16(b[1:], 13)
	b[3], b[4], b[5] = typ, resWindowFlags, typeFlags
	binary.LittleEndian.PutUint16(b[8:], lo)
	binary.LittleEndian.PutUint16(b[10:], hi)
	binary.LittleEndian.PutUint16(b[14:], hi-lo+1)
	return Resource{b: b}
}

// dwordAddr is the DWord Address Space Descriptor (§6.4.3.5.2).
func dwordAddr(what string, typ, typeFlags byte, lo, hi uint32) Resource {
	if hi < lo || hi-lo == 0xFFFFFFFF {
		return resErr(what, uint64(lo), uint64(hi))
	}
	b := make([]byte, 3+23)
	b[0] = resDWordAddr
	binary.LittleEndian.PutUint16(b[1:], 23)
	b[3], b[4], b[5] = typ, resWindowFlags, typeFlags
	binary.LittleEndian.PutUint32(b[10:], lo)
	binary.LittleEndian.PutUint32(b[14:], hi)
	binary.LittleEndian.PutUint32(b[22:], hi-lo+1)
	return Resource{b: b}
}

// resErr reports a range that is inverted or whose length overflows the
// descriptor's length field.
func resErr(what string, lo, hi uint64) Resource {
	return Resource{err: fmt.Errorf("%s [%#x, %#x]: range inverted or length does not fit: %w", what, lo, hi, ErrAML)}
}
