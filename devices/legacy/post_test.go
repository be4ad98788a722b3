package legacy

import (
	"bytes"
	"testing"
)

func TestPOST(t *testing.T) {
	p := NewPOST()
	if p.Last() != 0 || inb(p, 0) != 0 {
		t.Fatal("initial code not 0")
	}
	for _, tc := range []struct {
		name string
		off  uint64
		data []byte
		want byte
	}{
		{"byte", 0, []byte{0x12}, 0x12},
		{"another", 0, []byte{0xAA}, 0xAA},
		{"word: low byte is port 0x80's", 0, []byte{0x34, 0x12}, 0x34},
		{"past the port ignored", 1, []byte{0x99}, 0x34},
		{"offset near 2^64 ignored", ^uint64(0), []byte{0x99, 0x98}, 0x34},
	} {
		p.Write(tc.off, tc.data)
		if got := p.Last(); got != tc.want {
			t.Errorf("%s: Last = %#02x, want %#02x", tc.name, got, tc.want)
		}
		if got := inb(p, 0); got != tc.want {
			t.Errorf("%s: read %#02x, want %#02x", tc.name, got, tc.want)
		}
	}
	got := make([]byte, 2)
	p.Read(0, got)
	if want := []byte{0x34, 0xFF}; !bytes.Equal(got, want) {
		t.Errorf("16-bit read % x, want % x", got, want)
	}
}

func BenchmarkPOSTWrite(b *testing.B) {
	p := NewPOST()
	buf := []byte{0}
	b.ReportAllocs()
	for b.Loop() {
		p.Write(0, buf)
	}
}
