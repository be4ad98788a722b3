package hyperv

import (
	"encoding/binary"
	"math"
	"math/big"
	"sync"
	"testing"
)

// TestTSCScaleExact checks the scale against big-integer arithmetic:
// floor(2^64 * 10^7 / f).
func TestTSCScaleExact(t *testing.T) {
	for _, hz := range []uint64{10_000_001, 1_000_000_000, 2_100_000_000, 2_494_140_000, 2_500_000_000, 3_000_000_000, 5_000_000_000, math.MaxUint64} {
		got, err := TSCScale(hz)
		if err != nil {
			t.Fatalf("%d Hz: %v", hz, err)
		}
		want := new(big.Int).Lsh(big.NewInt(RefTimeHz), 64)
		want.Div(want, new(big.Int).SetUint64(hz))
		if !want.IsUint64() || want.Uint64() != got {
			t.Errorf("%d Hz: scale %#x, want %s", hz, got, want.Text(16))
		}
	}
	for _, hz := range []uint64{0, 1, RefTimeHz} {
		if _, err := TSCScale(hz); err == nil {
			t.Errorf("%d Hz: accepted; the scale would not fit in 64 bits", hz)
		}
	}
}

// TestTSCPageAccuracy simulates the guest's page arithmetic over a long
// interval: a TSC at 2.5 GHz and 3.0 GHz, starting from an arbitrary value,
// read after up to 10^6 s. The page time must agree with an ideal 10 MHz
// reference within 1 ppm (plus one tick of rounding).
func TestTSCPageAccuracy(t *testing.T) {
	for _, hz := range []uint64{2_500_000_000, 3_000_000_000, 2_494_140_000} {
		for _, tsc0 := range []uint64{0, 123_456_789_012, 1 << 62} {
			c, err := NewRefClock(hz, tsc0)
			if err != nil {
				t.Fatal(err)
			}
			scale, offset := c.Scale(), c.Offset()
			for _, secs := range []uint64{0, 1, 1000, 86400, 1_000_000} {
				tsc := tsc0 + secs*hz
				// The guest: ((tsc * scale) >> 64) + offset, mod 2^64.
				got := mulHi64(tsc, scale) + uint64(offset)
				want := secs * RefTimeHz
				diff := math.Abs(float64(int64(got - want)))
				if limit := float64(want)*1e-6 + 1; diff > limit {
					t.Errorf("%d Hz from TSC %d, %d s: page time %d, want %d (off by %.0f, limit %.0f)", hz, tsc0, secs, got, want, diff, limit)
				}
				if c.At(tsc) != got {
					t.Errorf("At(%d) = %d, the page formula gives %d", tsc, c.At(tsc), got)
				}
			}
		}
	}
}

func TestNextSequenceNeverInvalid(t *testing.T) {
	for _, s := range []uint32{0, 1, 0x7FFFFFFF, 0xFFFFFFFD, 0xFFFFFFFE, 0xFFFFFFFF} {
		n := NextSequence(s)
		if n == 0 || n == 0xFFFFFFFF {
			t.Errorf("NextSequence(%#x) = %#x", s, n)
		}
		if n == s {
			t.Errorf("NextSequence(%#x) did not change", s)
		}
	}
	s := uint32(0xFFFFFF00)
	for i := 0; i < 1000; i++ {
		s = NextSequence(s)
		if s == 0 || s == 0xFFFFFFFF {
			t.Fatalf("sequence %#x after %d updates", s, i)
		}
	}
}

func TestEncodeTSCPage(t *testing.T) {
	b := make([]byte, 24)
	EncodeTSCPage(b, 7, 0x0138138138138138, -1234)
	if binary.LittleEndian.Uint32(b[0:]) != 7 || binary.LittleEndian.Uint64(b[8:]) != 0x0138138138138138 ||
		int64(binary.LittleEndian.Uint64(b[16:])) != -1234 {
		t.Errorf("page % x", b)
	}
}

// TestRefClockMonotonic: Read never goes back, even when vCPUs' TSCs
// disagree by a few ticks or arrive out of order.
func TestRefClockMonotonic(t *testing.T) {
	c, err := NewRefClock(3_000_000_000, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Read(1000); r != 0 {
		t.Errorf("time at creation %d, want 0", r)
	}
	a := c.Read(1000 + 3_000_000) // 1 ms
	b := c.Read(1000 + 2_999_000) // another vCPU a little behind
	if a != 10_000 || b != a {
		t.Errorf("Read = %d then %d, want 10000 twice", a, b)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev := uint64(0)
			for i := uint64(0); i < 2000; i++ {
				v := c.Read(1000 + i*3000 + uint64(g)*7)
				if v < prev {
					t.Errorf("went back: %d after %d", v, prev)
					return
				}
				prev = v
			}
		}()
	}
	wg.Wait()
}

// TestRefClockPauseResume: the time a VM is paused is taken out of the
// reference time, the page offset moves by exactly that, and the time is
// continuous across the pause.
func TestRefClockPauseResume(t *testing.T) {
	const hz = 2_500_000_000
	c, err := NewRefClock(hz, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := c.Read(10 * hz) // 10 s
	c.Pause(10 * hz)
	if r := c.Read(15 * hz); r != before {
		t.Errorf("read while paused: %d, want %d", r, before)
	}
	off := c.Offset()
	if !c.Resume(70 * hz) { // paused for 60 s
		t.Fatal("Resume reported no change")
	}
	if got := c.Offset(); got != off-60*RefTimeHz {
		t.Errorf("offset moved from %d to %d, want by -%d", off, got, 60*RefTimeHz)
	}
	if r := c.Read(70 * hz); r != before {
		t.Errorf("time right after resume %d, want %d", r, before)
	}
	if r := c.Read(71 * hz); r != before+RefTimeHz {
		t.Errorf("1 s after resume %d, want %d", r, before+RefTimeHz)
	}
	if c.Resume(80 * hz) {
		t.Error("Resume without Pause changed the clock")
	}
	c.Pause(90 * hz)
	if c.Resume(90 * hz) {
		t.Error("a pause of no time changed the clock")
	}
}
