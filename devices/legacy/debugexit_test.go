package legacy

import (
	"bytes"
	"slices"
	"testing"
)

func TestDebugExit(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  uint64
		data []byte
		want []int
	}{
		{"byte 0", 0, []byte{0x00}, []int{1}},
		{"byte 0x10", 0, []byte{0x10}, []int{0x21}},
		{"byte 0xFF", 0, []byte{0xFF}, []int{0x1FF}},
		{"word", 0, []byte{0x34, 0x12}, []int{0x2469}},
		{"dword", 0, []byte{0x78, 0x56, 0x34, 0x12}, []int{0x2468ACF1}},
		{"dword all ones", 0, []byte{0xFF, 0xFF, 0xFF, 0xFF}, []int{0x1FFFFFFFF}},
		{"any offset", 3, []byte{0x01}, []int{3}},
		{"width 8 ignored", 0, make([]byte, 8), nil},
		{"width 3 ignored", 0, make([]byte, 3), nil},
		{"empty ignored", 0, nil, nil},
	} {
		p := &fakePower{}
		NewDebugExit(p).Write(tc.off, tc.data)
		_, exits, _ := p.snapshot()
		if !slices.Equal(exits, tc.want) {
			t.Errorf("%s: exits %#x, want %#x", tc.name, exits, tc.want)
		}
	}
	NewDebugExit(nil).Write(0, []byte{1}) // unwired: ignored
}

func TestDebugExitRead(t *testing.T) {
	d := NewDebugExit(&fakePower{})
	for _, n := range []int{1, 2, 4, 8} {
		got := make([]byte, n)
		d.Read(0, got)
		if want := bytes.Repeat([]byte{0xFF}, n); !bytes.Equal(got, want) {
			t.Errorf("%d-byte read % x, want all ones", n, got)
		}
	}
}
