package acpi

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
)

func mustBytes(t *testing.T, term Term) []byte {
	t.Helper()
	b, err := term.Bytes()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

func TestPkgLength(t *testing.T) {
	// body is the length of what follows the PkgLength; the encoded value
	// (total) adds the PkgLength's own bytes. Totals 63, 4095, 2^20-1 and
	// 2^28-1 are the largest of each width; a total of 64 cannot occur, since
	// a body of 63 needs two bytes and then totals 65.
	tests := []struct {
		body int
		want []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3F}},                          // total 63: largest one-byte
		{63, []byte{0x41, 0x04}},                    // total 65 = 0x41
		{64, []byte{0x42, 0x04}},                    // total 66
		{4093, []byte{0x4F, 0xFF}},                  // total 4095: largest two-byte
		{4094, []byte{0x81, 0x00, 0x01}},            // total 4097 = 0x1001
		{4096, []byte{0x83, 0x00, 0x01}},            // total 4099
		{1<<20 - 4, []byte{0x8F, 0xFF, 0xFF}},       // total 2^20-1: largest three-byte
		{1<<20 - 3, []byte{0xC1, 0x00, 0x00, 0x01}}, // total 2^20+1
		{1<<28 - 5, []byte{0xCF, 0xFF, 0xFF, 0xFF}}, // total 2^28-1: largest
	}
	for _, tt := range tests {
		got, err := encodePkgLength(tt.body)
		if err != nil {
			t.Errorf("encodePkgLength(%d): %v", tt.body, err)
			continue
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("encodePkgLength(%d) = % X, want % X", tt.body, got, tt.want)
		}
		if total := decodePkgLength(t, got); total != tt.body+len(got) {
			t.Errorf("encodePkgLength(%d) decodes to %d, want %d", tt.body, total, tt.body+len(got))
		}
	}
	for _, bad := range []int{-1, 1<<28 - 4} {
		if _, err := encodePkgLength(bad); !errors.Is(err, ErrAML) {
			t.Errorf("encodePkgLength(%d) error = %v, want ErrAML", bad, err)
		}
	}
}

// decodePkgLength is the reader's side of §20.2.4, to cross-check.
func decodePkgLength(t *testing.T, b []byte) int {
	t.Helper()
	n := int(b[0] >> 6)
	if n == 0 {
		return int(b[0] & 0x3F)
	}
	if b[0]&0x30 != 0 {
		t.Errorf("PkgLength % X: bits 5:4 of the lead byte must be 0", b)
	}
	v := int(b[0] & 0x0F)
	for i := 1; i <= n; i++ {
		v |= int(b[i]) << (4 + 8*(i-1))
	}
	return v
}

func TestAMLKnownEncodings(t *testing.T) {
	tests := []struct {
		name string
		term Term
		want []byte
	}{
		{`\_S3_`, sleepPackage(`\_S3_`, SlpTypS3),
			[]byte{0x08, 0x5C, 0x5F, 0x53, 0x33, 0x5F, 0x12, 0x06, 0x04, 0x01, 0x01, 0x00, 0x00}},
		{`\_S5_`, sleepPackage(`\_S5_`, SlpTypS5),
			[]byte{0x08, 0x5C, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00}},
		{`_HID PNP0A03`, Name("_HID", EisaID("PNP0A03")),
			[]byte{0x08, 0x5F, 0x48, 0x49, 0x44, 0x0C, 0x41, 0xD0, 0x0A, 0x03}},
		{`_HID PNP0A08`, Name("_HID", EisaID("PNP0A08")),
			[]byte{0x08, 0x5F, 0x48, 0x49, 0x44, 0x0C, 0x41, 0xD0, 0x0A, 0x08}},
		{`EisaId PNP0000 keeps the DWord prefix`, EisaID("PNP0000"),
			[]byte{0x0C, 0x41, 0xD0, 0x00, 0x00}},
		{`EisaId PNP0C02`, EisaID("PNP0C02"), []byte{0x0C, 0x41, 0xD0, 0x0C, 0x02}},
		{`padded segment`, Name("_S3", Integer(0)), []byte{0x08, 0x5F, 0x53, 0x33, 0x5F, 0x00}},
		{`scope`, Scope(`\_SB`), []byte{0x10, 0x06, 0x5C, 0x5F, 0x53, 0x42, 0x5F}},
		{`device`, Device("PCI0", Name("_UID", Integer(0))),
			[]byte{0x5B, 0x82, 0x0B, 0x50, 0x43, 0x49, 0x30, 0x08, 0x5F, 0x55, 0x49, 0x44, 0x00}},
		{`method`, Method("_STA", 0, false, Return(Integer(0x0F))),
			[]byte{0x14, 0x09, 0x5F, 0x53, 0x54, 0x41, 0x00, 0xA4, 0x0A, 0x0F}},
		{`serialized method with 2 args`, Method("FOO", 2, true),
			[]byte{0x14, 0x06, 0x46, 0x4F, 0x4F, 0x5F, 0x0A}},
		{`string`, String("ab"), []byte{0x0D, 0x61, 0x62, 0x00}},
		{`empty string`, String(""), []byte{0x0D, 0x00}},
		{`buffer`, Buffer([]byte{1, 2, 3}), []byte{0x11, 0x06, 0x0A, 0x03, 1, 2, 3}},
		{`empty buffer`, Buffer(nil), []byte{0x11, 0x02, 0x00}},
		{`empty package`, Package(), []byte{0x12, 0x02, 0x00}},
		{`nested package`, Package(Package(Integer(1))), []byte{0x12, 0x06, 0x01, 0x12, 0x03, 0x01, 0x01}},
		{`resource template end tag`, ResourceTemplate(), []byte{0x11, 0x05, 0x0A, 0x02, 0x79, 0x00}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustBytes(t, tt.term); !bytes.Equal(got, tt.want) {
				t.Errorf("got  % X\nwant % X", got, tt.want)
			}
		})
	}
}

func TestInteger(t *testing.T) {
	tests := []struct {
		v    uint64
		want []byte
	}{
		{0, []byte{0x00}},
		{1, []byte{0x01}},
		{2, []byte{0x0A, 0x02}},
		{0xFF, []byte{0x0A, 0xFF}},
		{0x100, []byte{0x0B, 0x00, 0x01}},
		{0xFFFF, []byte{0x0B, 0xFF, 0xFF}},
		{0x10000, []byte{0x0C, 0x00, 0x00, 0x01, 0x00}},
		{0xFFFFFFFF, []byte{0x0C, 0xFF, 0xFF, 0xFF, 0xFF}},
		{0x100000000, []byte{0x0E, 0, 0, 0, 0, 1, 0, 0, 0}},
		{math.MaxUint64 - 1, []byte{0x0E, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}},
		{math.MaxUint64, []byte{0xFF}},
	}
	for _, tt := range tests {
		if got := mustBytes(t, Integer(tt.v)); !bytes.Equal(got, tt.want) {
			t.Errorf("Integer(%#x) = % X, want % X", tt.v, got, tt.want)
		}
	}
}

func TestNameString(t *testing.T) {
	tests := []struct {
		path string
		want []byte
	}{
		{`\`, []byte{0x5C, 0x00}},
		{`^`, []byte{0x5E, 0x00}},
		{`_SB`, []byte("_SB_")},
		{`\_SB_`, []byte(`\_SB_`)},
		{`A`, []byte("A___")},
		{`\_SB.PCI0`, append([]byte{0x5C, 0x2E}, "_SB_PCI0"...)},
		{`^^PCI0`, []byte("^^PCI0")},
		{`\_SB.PCI0.ISA`, append([]byte{0x5C, 0x2F, 0x03}, "_SB_PCI0ISA_"...)},
		{`_SB.PCI0.S00.S01`, append([]byte{0x2F, 0x04}, "_SB_PCI0S00_S01_"...)},
	}
	for _, tt := range tests {
		got, err := nameString(tt.path)
		if err != nil {
			t.Errorf("nameString(%q): %v", tt.path, err)
			continue
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("nameString(%q) = % X, want % X", tt.path, got, tt.want)
		}
	}
	for _, bad := range []string{"", "_sb", "TOOLONG", "1ABC", `\_SB..PCI0`, `\_SB.`, `^\_SB`, "A-B", strings.Repeat("A.", 256) + "A"} {
		if _, err := nameString(bad); !errors.Is(err, ErrAML) {
			t.Errorf("nameString(%q) error = %v, want ErrAML", bad, err)
		}
	}
}

func TestLargePackageLengths(t *testing.T) {
	// A buffer whose body crosses each PkgLength width boundary must still
	// decode to its exact size.
	for _, n := range []int{59, 60, 61, 62, 63, 4090, 4091, 4092, 4093, 70000} {
		b := mustBytes(t, Buffer(make([]byte, n)))
		total := decodePkgLength(t, b[1:])
		if want := len(b) - 1; total != want {
			t.Errorf("Buffer(%d bytes): PkgLength %d, want %d", n, total, want)
		}
	}
}

func TestAMLErrorsPropagate(t *testing.T) {
	tests := map[string]Term{
		"bad name":             Name("bad", Integer(0)),
		"bad value":            Name("_HID", EisaID("pnp0a03")),
		"bad eisa length":      EisaID("PNP0A0"),
		"bad eisa hex":         EisaID("PNP0A0G"),
		"bad string":           String("caf\xe9"),
		"nul in string":        String("a\x00b"),
		"too many elements":    Package(make([]Term, 256)...),
		"nested in package":    Package(String("\x80")),
		"nested in scope":      Scope(`\_SB`, Device("PCI0", Name("x", Integer(1)))),
		"bad scope name":       Scope("", Integer(0)),
		"method args":          Method("FOO", 8, false),
		"return":               Return(String("\xff")),
		"bad resource":         ResourceTemplate(WordIO(0x10, 0x0F)),
		"word length overflow": ResourceTemplate(WordIO(0, 0xFFFF)),
		"irq":                  ResourceTemplate(IRQNoFlags(16)),
	}
	for name, term := range tests {
		if _, err := term.Bytes(); !errors.Is(err, ErrAML) {
			t.Errorf("%s: error = %v, want ErrAML", name, err)
		}
		if _, err := Encode(Integer(1), term); !errors.Is(err, ErrAML) {
			t.Errorf("%s: Encode error = %v, want ErrAML", name, err)
		}
	}
}
