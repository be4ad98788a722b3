package virtio

import "testing"

// A frame spread over three chains: the device takes two, finds no third,
// gives both back, waits for the driver to add one (avail_event set to the
// index it saw), then takes all three and publishes them with one index
// store.
func TestQueueUnpopAndPushBatch(t *testing.T) {
	mem := testMem(t, 4<<20)
	r := newRing(t, mem, 8, FeatureEventIdx)
	for i := uint16(0); i < 2; i++ {
		putDesc(t, mem, ringDesc, i, bufBase+uint64(i)*0x100, 0x100, DescFWrite, 0)
		r.publish(i)
	}
	var c Chain
	for i := 0; i < 2; i++ {
		if ok, err := r.q.Pop(&c); !ok || err != nil {
			t.Fatalf("pop %d: %v %v", i, ok, err)
		}
	}
	if ok, _ := r.q.Pop(&c); ok {
		t.Fatal("a third chain out of two")
	}
	seen := r.q.AvailIdx()
	if err := r.q.Unpop(3); err == nil {
		t.Error("unpop of more chains than outstanding accepted")
	}
	if err := r.q.Unpop(2); err != nil {
		t.Fatal(err)
	}
	if r.q.AvailIdx() != 0 {
		t.Fatalf("next avail %d after unpop, want 0", r.q.AvailIdx())
	}
	if r.q.EnableNotifyAt(seen) {
		t.Error("EnableNotifyAt reports new buffers when none were added")
	}
	availEvent, _ := mem.ReadU16(ringDevice + 4 + 8*8)
	if availEvent != seen {
		t.Errorf("avail_event %d, want %d (notify on the next addition)", availEvent, seen)
	}
	putDesc(t, mem, ringDesc, 2, bufBase+0x200, 0x100, DescFWrite, 0)
	r.publish(2)
	if !r.q.EnableNotifyAt(seen) {
		t.Error("EnableNotifyAt misses a buffer added meanwhile")
	}
	var used []Used
	for i := 0; i < 3; i++ {
		ok, err := r.q.Pop(&c)
		if !ok || err != nil {
			t.Fatalf("pop %d after unpop: %v %v", i, ok, err)
		}
		if c.Head != uint16(i) {
			t.Fatalf("pop %d returned head %d", i, c.Head)
		}
		used = append(used, Used{Head: c.Head, Written: uint32(10 + i)})
	}
	if err := r.q.PushBatch(append(used, Used{})); err == nil {
		t.Error("a batch larger than what is outstanding was accepted")
	}
	if r.usedIdx() != 0 {
		t.Fatal("a refused batch moved the used index")
	}
	if err := r.q.PushBatch(used); err != nil {
		t.Fatal(err)
	}
	if got := r.usedIdx(); got != 3 {
		t.Fatalf("used idx %d, want 3", got)
	}
	for i := uint16(0); i < 3; i++ {
		if id, n := r.usedElem(i); id != uint32(i) || n != uint32(10+i) {
			t.Errorf("used %d: id %d len %d", i, id, n)
		}
	}
	if err := r.q.PushBatch(nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}
	if !r.q.NeedsInterrupt() {
		t.Error("a pushed batch does not ask for an interrupt")
	}
}
