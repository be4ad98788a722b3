package virtio

import (
	"errors"
	"testing"
)

func TestQueuePopPush(t *testing.T) {
	mem := testMem(t, 4<<20)
	r := newRing(t, mem, 4, 0)
	var c Chain
	if ok, err := r.q.Pop(&c); ok || err != nil {
		t.Fatalf("empty ring: %v %v", ok, err)
	}
	// Three requests, used in a different order, wrapping the ring.
	for round := 0; round < 3; round++ {
		for i := uint16(0); i < 3; i++ {
			putDesc(t, mem, ringDesc, i, bufBase+uint64(i)*0x100, 0x100, DescFWrite, 0)
			r.publish(i)
		}
		var heads []uint16
		for {
			ok, err := r.q.Pop(&c)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			heads = append(heads, c.Head)
		}
		if len(heads) != 3 {
			t.Fatalf("popped %v", heads)
		}
		for _, h := range []uint16{heads[2], heads[0], heads[1]} {
			if err := r.q.Push(h, uint32(h)*10+1); err != nil {
				t.Fatal(err)
			}
		}
		if got := r.usedIdx(); got != uint16(3*(round+1)) {
			t.Fatalf("used idx %d", got)
		}
		for k, want := range []uint32{2, 0, 1} {
			id, n := r.usedElem(uint16(3*round + k))
			if id != want || n != want*10+1 {
				t.Errorf("round %d used %d: id %d len %d", round, k, id, n)
			}
		}
	}
	if err := r.q.Push(0, 0); err == nil {
		t.Error("push with nothing outstanding accepted")
	}
}

func TestQueueAvailIdxJump(t *testing.T) {
	mem := testMem(t, 4<<20)
	r := newRing(t, mem, 4, 0)
	_ = mem.WriteU16(ringDriver+2, 5) // 5 new entries in a ring of 4
	var c Chain
	if _, err := r.q.Pop(&c); !errors.Is(err, ErrBadRing) {
		t.Fatalf("error %v, want ErrBadRing", err)
	}
	if len(r.o.failures) != 1 {
		t.Fatalf("owner saw %d failures", len(r.o.failures))
	}
	if _, err := r.q.Pop(&c); !errors.Is(err, ErrDeviceBroken) {
		t.Fatalf("after the failure: %v, want ErrDeviceBroken", err)
	}
}

func TestQueueBadChainFails(t *testing.T) {
	mem := testMem(t, 4<<20)
	r := newRing(t, mem, 4, 0)
	putDesc(t, mem, ringDesc, 0, 1<<40, 16, 0, 0)
	r.publish(0)
	var c Chain
	if _, err := r.q.Pop(&c); !errors.Is(err, ErrBadChain) || len(r.o.failures) != 1 {
		t.Fatalf("error %v, failures %d", err, len(r.o.failures))
	}
}

func TestQueueNoDMAWithoutBusMaster(t *testing.T) {
	mem := testMem(t, 4<<20)
	r := newRing(t, mem, 4, 0)
	putDesc(t, mem, ringDesc, 0, bufBase, 16, 0, 0)
	r.publish(0)
	r.o.noDMA = true
	var c Chain
	if ok, err := r.q.Pop(&c); ok || err != nil {
		t.Fatalf("popped without bus mastering: %v %v", ok, err)
	}
	r.o.noDMA = false
	if ok, err := r.q.Pop(&c); !ok || err != nil {
		t.Fatalf("pop: %v %v", ok, err)
	}
}

// TestQueueInterruptSuppression: NO_INTERRUPT without EVENT_IDX, and the
// used_event window with it (spec §2.7.10).
func TestQueueInterruptSuppression(t *testing.T) {
	mem := testMem(t, 4<<20)
	complete := func(r *ring, n int) {
		for i := 0; i < n; i++ {
			putDesc(t, mem, ringDesc, 0, bufBase, 16, DescFWrite, 0)
			r.publish(0)
			var c Chain
			if ok, err := r.q.Pop(&c); !ok || err != nil {
				t.Fatal(ok, err)
			}
			if err := r.q.Push(c.Head, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := newRing(t, mem, 8, 0)
	complete(r, 1)
	if !r.q.NeedsInterrupt() {
		t.Error("no interrupt without suppression")
	}
	if r.q.NeedsInterrupt() {
		t.Error("interrupt with nothing new pushed")
	}
	_ = mem.WriteU16(ringDriver, AvailFNoInterrupt)
	complete(r, 1)
	if r.q.NeedsInterrupt() {
		t.Error("interrupt despite NO_INTERRUPT")
	}

	mem2 := testMem(t, 4<<20)
	mem = mem2
	r = newRing(t, mem, 8, FeatureEventIdx)
	usedEvent := func(v uint16) { _ = mem.WriteU16(ringDriver+4+2*8, v) }
	usedEvent(0)
	complete(r, 1) // used idx 0 -> 1 crosses used_event 0
	if !r.q.NeedsInterrupt() {
		t.Error("event idx: first completion not signalled")
	}
	usedEvent(3)
	complete(r, 1) // 1 -> 2: used_event 3 not reached
	if r.q.NeedsInterrupt() {
		t.Error("event idx: signalled before used_event")
	}
	complete(r, 2) // 2 -> 4 passes 3
	if !r.q.NeedsInterrupt() {
		t.Error("event idx: not signalled after passing used_event")
	}
	_ = mem.WriteU16(ringDriver, AvailFNoInterrupt) // ignored with EVENT_IDX
	usedEvent(4)
	complete(r, 1)
	if !r.q.NeedsInterrupt() {
		t.Error("event idx: NO_INTERRUPT must be ignored")
	}
}

func TestQueueEnableNotify(t *testing.T) {
	mem := testMem(t, 4<<20)
	r := newRing(t, mem, 8, FeatureEventIdx)
	putDesc(t, mem, ringDesc, 0, bufBase, 16, 0, 0)
	r.publish(0)
	var c Chain
	if ok, _ := r.q.Pop(&c); !ok {
		t.Fatal("pop")
	}
	if r.q.EnableNotify() {
		t.Error("EnableNotify reports work on an empty ring")
	}
	if ev, _ := mem.ReadU16(ringDevice + 4 + 8*8); ev != 1 {
		t.Errorf("avail_event %d, want 1", ev)
	}
	r.publish(0)
	if !r.q.EnableNotify() {
		t.Error("EnableNotify missed a buffer made available meanwhile")
	}
}

func TestCheckLayout(t *testing.T) {
	mem := testMem(t, 1<<20)
	good := RingLayout{Desc: 0x1000, Driver: 0x2000, Device: 0x3000}
	if err := checkLayout(mem, 16, 256, good, true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size uint16
		l    RingLayout
	}{
		{"size 0", 0, good},
		{"size not a power of two", 12, good},
		{"size above the maximum", 512, good},
		{"descriptor table misaligned", 16, RingLayout{Desc: 0x1008, Driver: 0x2000, Device: 0x3000}},
		{"driver ring misaligned", 16, RingLayout{Desc: 0x1000, Driver: 0x2001, Device: 0x3000}},
		{"device ring misaligned", 16, RingLayout{Desc: 0x1000, Driver: 0x2000, Device: 0x3002}},
		{"descriptor table past RAM", 256, RingLayout{Desc: 1<<20 - 0x800, Driver: 0x2000, Device: 0x3000}},
		{"device ring past RAM", 16, RingLayout{Desc: 0x1000, Driver: 0x2000, Device: 1<<20 - 0x80}},
		{"driver ring outside RAM", 16, RingLayout{Desc: 0x1000, Driver: 1 << 40, Device: 0x3000}},
	} {
		if err := checkLayout(mem, tc.size, 256, tc.l, true); !errors.Is(err, ErrBadLayout) {
			t.Errorf("%s: %v, want ErrBadLayout", tc.name, err)
		}
	}
	// The event fields count only with EVENT_IDX: a ring that ends exactly
	// at the end of RAM is fine without them.
	tight := RingLayout{Desc: 0x1000, Driver: 0x2000, Device: 1<<20 - (4 + 8*16)}
	if err := checkLayout(mem, 16, 256, tight, false); err != nil {
		t.Errorf("tight ring without EVENT_IDX: %v", err)
	}
	if err := checkLayout(mem, 16, 256, tight, true); err == nil {
		t.Error("tight ring with EVENT_IDX accepted")
	}
}

func TestVringNeedEvent(t *testing.T) {
	for _, tc := range []struct {
		event, newIdx, old uint16
		want               bool
	}{
		{0, 1, 0, true}, {1, 1, 0, false}, {5, 7, 4, true}, {7, 7, 4, false},
		{0xFFFF, 0, 0xFFFE, true}, // across the wrap
		{3, 3, 3, false},
	} {
		if got := vringNeedEvent(tc.event, tc.newIdx, tc.old); got != tc.want {
			t.Errorf("need_event(%d, %d, %d) = %v", tc.event, tc.newIdx, tc.old, got)
		}
	}
}
