package acpi

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
)

// ErrAML reports an argument an AML constructor cannot encode (a bad name,
// a too-long package, an out-of-range value). The AML encoder is only fed by
// kvmm itself, never by the guest, so this is a programming error surfaced
// as an error rather than a panic.
var ErrAML = errors.New("invalid AML")

// AML opcodes and prefixes, ACPI 6.5 §20.2 and §20.3.
const (
	amlZeroOp        = 0x00
	amlOneOp         = 0x01
	amlNameOp        = 0x08
	amlBytePrefix    = 0x0A
	amlWordPrefix    = 0x0B
	amlDWordPrefix   = 0x0C
	amlStringPrefix  = 0x0D
	amlQWordPrefix   = 0x0E
	amlScopeOp       = 0x10
	amlBufferOp      = 0x11
	amlPackageOp     = 0x12
	amlMethodOp      = 0x14
	amlDualNamePfx   = 0x2E
	amlMultiNamePfx  = 0x2F
	amlExtOpPrefix   = 0x5B
	amlDeviceOp      = 0x82 // after amlExtOpPrefix
	amlRootChar      = '\\'
	amlParentPfxChar = '^'
	amlReturnOp      = 0xA4
	amlOnesOp        = 0xFF
	amlNullName      = 0x00
)

// Largest values a PkgLength of 1, 2, 3 and 4 bytes can hold (§20.2.4): one
// byte has 6 value bits; each following byte adds 8 to the 4 low bits of the
// lead byte.
const (
	pkgLen1Max = 1<<6 - 1
	pkgLen2Max = 1<<12 - 1
	pkgLen3Max = 1<<20 - 1
	pkgLen4Max = 1<<28 - 1
)

// Term is one encoded AML object: a named object, a scope, a data object.
// Constructors do not return errors one by one; a bad argument is carried
// inside the Term and surfaces from Bytes, Encode or any Term that contains
// it, so a whole DSDT can be written as one nested expression.
type Term struct {
	b   []byte
	err error
}

// Bytes returns the encoding of t, or the first error met while building it.
func (t Term) Bytes() ([]byte, error) {
	if t.err != nil {
		return nil, t.err
	}
	return t.b, nil
}

// Encode concatenates terms into a TermList (the body of a definition block,
// a scope or a method).
func Encode(terms ...Term) ([]byte, error) {
	var out []byte
	for _, t := range terms {
		if t.err != nil {
			return nil, t.err
		}
		out = append(out, t.b...)
	}
	return out, nil
}

func termErr(err error) Term { return Term{err: err} }

// encodePkgLength encodes the PkgLength of a package whose body (everything
// after the PkgLength) is body bytes long. The encoded value counts the
// PkgLength bytes themselves too, so the width is chosen for body+width.
func encodePkgLength(body int) ([]byte, error) {
	if body < 0 {
		return nil, fmt.Errorf("package body length %d: %w", body, ErrAML)
	}
	switch {
	case body+1 <= pkgLen1Max:
		return []byte{byte(body + 1)}, nil
	case body+2 <= pkgLen2Max:
		return multiBytePkgLength(body+2, 2), nil
	case body+3 <= pkgLen3Max:
		return multiBytePkgLength(body+3, 3), nil
	case body+4 <= pkgLen4Max:
		return multiBytePkgLength(body+4, 4), nil
	}
	return nil, fmt.Errorf("package body length %d exceeds the 28-bit PkgLength: %w", body, ErrAML)
}

// multiBytePkgLength lays out total in n bytes: bits 7:6 of the lead byte
// count the following bytes, its bits 3:0 hold the low nibble, and the
// following bytes hold the rest 8 bits at a time.
func multiBytePkgLength(total, n int) []byte {
	out := make([]byte, n)
	out[0] = byte(n-1)<<6 | byte(total&0x0F)
	for i := 1; i < n; i++ {
		out[i] = byte(total >> (4 + 8*(i-1)))
	}
	return out
}

// pkg wraps body as op PkgLength body, the shape of every variable-length
// AML object.
func pkg(op []byte, body []byte) Term {
	pl, err := encodePkgLength(len(body))
	if err != nil {
		return termErr(err)
	}
	out := make([]byte, 0, len(op)+len(pl)+len(body))
	out = append(out, op...)
	out = append(out, pl...)
	return Term{b: append(out, body...)}
}

// nameSeg pads a 1-4 character segment with '_' and checks its characters:
// a lead of A-Z or '_', then A-Z, 0-9 or '_' (§20.2.2).
func nameSeg(seg string) ([]byte, error) {
	if len(seg) == 0 || len(seg) > 4 {
		return nil, fmt.Errorf("name segment %q: must be 1-4 characters: %w", seg, ErrAML)
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		lead := c == '_' || (c >= 'A' && c <= 'Z')
		if !lead && (i == 0 || c < '0' || c > '9') {
			return nil, fmt.Errorf("name segment %q: invalid character %q: %w", seg, c, ErrAML)
		}
	}
	return []byte(seg + strings.Repeat("_", 4-len(seg))), nil
}

// nameString encodes an ASL path: an optional root `\` or any number of
// parent `^` prefixes, then dot-separated segments ("\_SB.PCI0", "_HID",
// "^^FOO"). A bare prefix ("\") names the prefix itself (NullName).
func nameString(path string) ([]byte, error) {
	var out []byte
	rest := path
	if strings.HasPrefix(rest, `\`) {
		out = append(out, amlRootChar)
		rest = rest[1:]
	} else {
		for strings.HasPrefix(rest, "^") {
			out = append(out, amlParentPfxChar)
			rest = rest[1:]
		}
	}
	if rest == "" {
		if len(out) == 0 {
			return nil, fmt.Errorf("empty name: %w", ErrAML)
		}
		return append(out, amlNullName), nil
	}
	segs := strings.Split(rest, ".")
	switch {
	case len(segs) == 2:
		out = append(out, amlDualNamePfx)
	case len(segs) > 2:
		if len(segs) > math.MaxUint8 {
			return nil, fmt.Errorf("name %q: more than 255 segments: %w", path, ErrAML)
		}
		out = append(out, amlMultiNamePfx, byte(len(segs)))
	}
	for _, s := range segs {
		b, err := nameSeg(s)
		if err != nil {
			return nil, fmt.Errorf("name %q: %w", path, err)
		}
		out = append(out, b...)
	}
	return out, nil
}

// Integer encodes v in the smallest form: ZeroOp, OneOp, OnesOp (all 64
// bits set, as the DSDT is revision 2), or a Byte/Word/DWord/QWord prefix.
func Integer(v uint64) Term {
	switch {
	case v == 0:
		return Term{b: []byte{amlZeroOp}}
	case v == 1:
		return Term{b: []byte{amlOneOp}}
	case v == math.MaxUint64:
		return Term{b: []byte{amlOnesOp}}
	case v <= math.MaxUint8:
		return Term{b: []byte{amlBytePrefix, byte(v)}}
	case v <= math.MaxUint16:
		return Term{b: []byte{amlWordPrefix, byte(v), byte(v >> 8)}}
	case v <= math.MaxUint32:
		return dword(uint32(v))
	}
	b := []byte{amlQWordPrefix}
	for i := 0; i < 8; i++ {
		b = append(b, byte(v>>(8*i)))
	}
	return Term{b: b}
}

// dword always uses the DWord prefix, as EisaId needs whatever the value.
func dword(v uint32) Term {
	return Term{b: []byte{amlDWordPrefix, byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}}
}

// String encodes an ASCII string (characters 0x01-0x7F) with its NUL.
func String(s string) Term {
	b := []byte{amlStringPrefix}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7F {
			return termErr(fmt.Errorf("string %q: byte %#x is not AML ASCII: %w", s, s[i], ErrAML))
		}
	}
	b = append(b, s...)
	return Term{b: append(b, 0)}
}

// Buffer encodes a buffer object holding data; its size is an Integer.
func Buffer(data []byte) Term {
	size := Integer(uint64(len(data))).b
	body := make([]byte, 0, len(size)+len(data))
	body = append(body, size...)
	body = append(body, data...)
	return pkg([]byte{amlBufferOp}, body)
}

// Package encodes a fixed package of up to 255 elements (a larger one
// would need VarPackageOp, which nothing here uses).
func Package(elems ...Term) Term {
	if len(elems) > math.MaxUint8 {
		return termErr(fmt.Errorf("package of %d elements: at most 255: %w", len(elems), ErrAML))
	}
	body, err := Encode(elems...)
	if err != nil {
		return termErr(fmt.Errorf("package: %w", err))
	}
	return pkg([]byte{amlPackageOp}, append([]byte{byte(len(elems))}, body...))
}

// Name binds name to a data object: Name(name, value).
func Name(name string, value Term) Term {
	ns, err := nameString(name)
	if err != nil {
		return termErr(err)
	}
	if value.err != nil {
		return termErr(fmt.Errorf("Name(%s): %w", name, value.err))
	}
	out := append([]byte{amlNameOp}, ns...)
	return Term{b: append(out, value.b...)}
}

// Scope opens the namespace scope name for terms.
func Scope(name string, terms ...Term) Term {
	return namedPkg([]byte{amlScopeOp}, "Scope", name, nil, terms)
}

// Device declares a device object name holding terms.
func Device(name string, terms ...Term) Term {
	return namedPkg([]byte{amlExtOpPrefix, amlDeviceOp}, "Device", name, nil, terms)
}

// Method declares a control method with args arguments (0-7); serialized
// methods are not re-entered concurrently by the OS. SyncLevel is 0.
func Method(name string, args int, serialized bool, terms ...Term) Term {
	if args < 0 || args > 7 {
		return termErr(fmt.Errorf("Method(%s): %d arguments, at most 7: %w", name, args, ErrAML))
	}
	flags := byte(args)
	if serialized {
		flags |= 1 << 3
	}
	return namedPkg([]byte{amlMethodOp}, "Method", name, []byte{flags}, terms)
}

// namedPkg encodes op PkgLength NameString extra TermList, the shape shared
// by Scope, Device and Method.
func namedPkg(op []byte, what, name string, extra []byte, terms []Term) Term {
	ns, err := nameString(name)
	if err != nil {
		return termErr(fmt.Errorf("%s: %w", what, err))
	}
	body, err := Encode(terms...)
	if err != nil {
		return termErr(fmt.Errorf("%s(%s): %w", what, name, err))
	}
	b := make([]byte, 0, len(ns)+len(extra)+len(body))
	b = append(b, ns...)
	b = append(b, extra...)
	return pkg(op, append(b, body...))
}

// Return returns value from a method.
func Return(value Term) Term {
	if value.err != nil {
		return termErr(fmt.Errorf("Return: %w", value.err))
	}
	return Term{b: append([]byte{amlReturnOp}, value.b...)}
}

// EisaID compresses a PNP id such as "PNP0A03" into the 32-bit EISA form:
// three letters of 5 bits each and four hex digits, stored big-endian, and
// always emitted with the DWord prefix as iasl does.
func EisaID(id string) Term {
	if len(id) != 7 {
		return termErr(fmt.Errorf("EISA id %q: must be 3 letters and 4 hex digits: %w", id, ErrAML))
	}
	var v uint32
	for i := 0; i < 3; i++ {
		c := id[i]
		if c < 'A' || c > 'Z' {
			return termErr(fmt.Errorf("EISA id %q: %q is not an upper-case letter: %w", id, c, ErrAML))
		}
		v = v<<5 | uint32(c-'@')
	}
	for i := 3; i < 7; i++ {
		d, ok := hexDigit(id[i])
		if !ok {
			return termErr(fmt.Errorf("EISA id %q: %q is not a hex digit: %w", id, id[i], ErrAML))
		}
		v = v<<4 | uint32(d)
	}
	// The big-endian bytes become the little-endian DWord operand.
	return dword(bits.ReverseBytes32(v))
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
